"""deploy/k8s: every overlay (one per rollout phase) rendered by the real kustomize binary
(stack/kustomize.sh) and checked.

- Core kinds validate against the schemas of one pinned Kubernetes version (kubernetes-validate,
  strict: unknown fields fail). ServiceMonitor, PrometheusRule and the Argo CD Application are
  CRDs without schemas there: they are checked structurally (apiVersion, kind, required fields).
- Every environment variable the manifests set is a real setting (or one of the forwarder's
  own two); every setting a phase needs is set, with that phase's values.
- Probe paths are pages of the app; probe ports are the container port = TORGHUT_WEB_PORT.
- Secrets are only referenced (no Secret object, no secret value inlined).
- docker-compose.yml uses the same variable names; the PrometheusRule is deploy/torghut-alerts.yml.
"""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.docs import FORWARDER_VARIABLES, env_name
from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.33.0"  # the cluster version the manifests are validated against
PHASES = ("phase0-baseline", "phase1-dark", "phase2-dual-read", "phase3-canary", "phase4-cutover")
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("argoproj.io/v1alpha1", "Application"),
}
SETTINGS = {env_name(name, info) for name, info in Settings.model_fields.items()}
KNOWN_VARIABLES = SETTINGS | set(FORWARDER_VARIABLES)
SECRET_SETTINGS = {
    env_name(name, info)
    for name, info in Settings.model_fields.items()
    if "SecretStr" in str(info.annotation)
}


@functools.cache
def kustomize() -> str:
    built = subprocess.run(
        ["bash", str(ROOT / "stack" / "kustomize.sh")], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return built.stdout.strip()


@functools.cache
def render(phase: str) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [kustomize(), "build", str(K8S / "overlays" / phase)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return tuple(d for d in yaml.safe_load_all(out.stdout) if d)


def by_kind(phase: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in render(phase) if d["kind"] == kind]


def one(phase: str, kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(phase, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, (phase, kind, name)
    return found[0]


def config(phase: str) -> dict[str, str]:
    return dict(one(phase, "ConfigMap", "torghut-streams-config")["data"])


def pod_specs(phase: str) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in render(phase)
        if d["kind"] in ("StatefulSet", "Deployment", "Job")
    }


def test_every_phase_has_an_overlay_and_nothing_else() -> None:
    assert sorted(p.name for p in (K8S / "overlays").iterdir()) == sorted(PHASES)


@pytest.mark.parametrize("phase", PHASES)
def test_manifests_validate_against_kubernetes_schemas(phase: str) -> None:
    kinds = sorted(d["kind"] for d in render(phase))
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Job",
            "Job",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            "StatefulSet",
        ]
    )
    for doc in render(phase):
        assert doc["metadata"].get("namespace") == "torghut", doc["metadata"]
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_catches_a_broken_manifest() -> None:
    sts = yaml.safe_load(yaml.safe_dump(one("phase1-dark", "StatefulSet")))
    sts["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathx"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, KUBERNETES_VERSION, strict=True)


def test_crds_are_structurally_valid() -> None:
    monitor = one("phase1-dark", "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one("phase1-dark", "Service")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert ports == {"http"}

    rule = one("phase1-dark", "PrometheusRule")
    alerts = yaml.safe_load((ROOT / "deploy" / "torghut-alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]  # built from deploy/torghut-alerts.yml
    for group in rule["spec"]["groups"]:
        assert group["name"] and all(r["alert"] and r["expr"] for r in group["rules"])
    check = subprocess.run(
        ["python3", str(K8S / "sync_rules.py"), "--check"], capture_output=True, text=True
    )
    assert check.returncode == 0, "run `make docs`: base/prometheusrule.yaml drifted"

    app = yaml.safe_load((K8S / "argocd" / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    spec = app["spec"]
    assert {"project", "source", "destination"} <= spec.keys()
    assert {"repoURL", "path", "targetRevision"} <= spec["source"].keys()
    assert spec["destination"]["namespace"] == "torghut"
    assert Path(ROOT / spec["source"]["path"]).name in PHASES


@pytest.mark.parametrize("phase", PHASES)
def test_every_variable_is_a_setting_and_no_secret_is_inlined(phase: str) -> None:
    data = config(phase)
    assert set(data) <= SETTINGS, set(data) - SETTINGS
    for name, spec in pod_specs(phase).items():
        for container in spec["containers"]:
            for variable in container.get("env", []):
                assert variable["name"] in KNOWN_VARIABLES, (name, variable["name"])
                assert variable["name"] not in SECRET_SETTINGS, (name, variable["name"])
            assert [e["configMapRef"]["name"] for e in container["envFrom"]] == [
                "torghut-streams-config"
            ]
    assert not by_kind(phase, "Secret")
    # DSNs carry no password; secret settings come only from files.
    assert (
        "@" in data["DATABASE_URL"] and ":" not in data["DATABASE_URL"].split("//")[1].split("@")[0]
    )
    assert not (set(data) & SECRET_SETTINGS - {"DATABASE_URL", "CLICKHOUSE_DSN"})


@pytest.mark.parametrize("phase", PHASES)
def test_secret_files_named_by_settings_are_mounted(phase: str) -> None:
    data = config(phase)
    for name, spec in pod_specs(phase).items():
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        for variable in (
            "KAFKA_SASL_PASSWORD_FILE",
            "KAFKA_SSL_CA_FILE",
            "DATABASE_PASSWORD_FILE",
            "DATABASE_SSL_ROOT_CERT_FILE",
        ):
            folder, _, file = data[variable].rpartition("/")
            volume = volumes[mounts[folder]]
            assert [i["path"] for i in volume["secret"]["items"]] == [file], (name, variable)
        settings_volume = volumes[mounts[data["TORGHUT_SECRETS_DIR"]]]
        files = {
            item["path"]
            for source in settings_volume["projected"]["sources"]
            for item in source["secret"]["items"]
        }
        assert files <= SECRET_SETTINGS
        assert {"APCA_API_KEY_ID", "APCA_API_SECRET_KEY", "TRADING_ACCOUNTS_JSON"} <= files


def accounts_optional(phase: str) -> bool:
    spec = one(phase, "StatefulSet")["spec"]["template"]["spec"]
    sources = next(v for v in spec["volumes"] if v["name"] == "settings-secrets")["projected"]
    return next(
        s["secret"]["optional"]
        for s in sources["sources"]
        if s["secret"]["name"] == "torghut-accounts"
    )


def migrate_script(phase: str) -> str:
    job = one(phase, "Job", "torghut-migrate")
    return str(job["spec"]["template"]["spec"]["containers"][0]["args"][0])


@pytest.mark.parametrize("phase", PHASES)
def test_each_phase_sets_what_it_needs(phase: str) -> None:
    data = config(phase)
    needed = {
        "TORGHUT_APP_ID",
        "KAFKA_BROKERS",
        "KAFKA_SECURITY_PROTOCOL",
        "KAFKA_SASL_USERNAME",
        "KAFKA_SASL_PASSWORD_FILE",
        "KAFKA_SSL_CA_FILE",
        "DATABASE_URL",
        "DATABASE_PASSWORD_FILE",
        "DATABASE_SSLMODE",
        "DATABASE_SSL_ROOT_CERT_FILE",
        "TORGHUT_DATA_DIR",
        "TORGHUT_WEB_HOST",
        "TORGHUT_WEB_PORT",
        "TORGHUT_TOPIC_REPLICATION_FACTOR",
        "TORGHUT_SECRETS_DIR",
        "TRADING_MULTI_ACCOUNT_ENABLED",
        "TRADING_ORDER_FEED_TOPIC",
        "TRADING_ORDER_FEED_TOPIC_V2",
        "TRADING_ACCOUNT_LABEL",
        "TORGHUT_FORWARDER_EMIT_V1",
    }
    assert needed <= set(data), needed - set(data)
    assert data["TORGHUT_APP_ID"] == "torghut-streams"  # the consumer group: never per phase
    assert data["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert data["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert data["DATABASE_SSLMODE"] == "verify-full"
    assert int(data["TORGHUT_TOPIC_REPLICATION_FACTOR"]) == 3
    assert "TORGHUT_ALLOW_UNREPLICATED_STATE" not in data
    settings = Settings.model_validate(data)  # every value parses as its setting
    multi = settings.multi_account_enabled
    v1, v2 = settings.order_feed_topic, settings.order_feed_topic_v2
    workers = one(phase, "StatefulSet")["spec"]["replicas"]
    forwarders = one(phase, "Deployment")["spec"]["replicas"]
    expected = {
        "phase0-baseline": (False, True, False, 0, "--revision 0001"),
        "phase1-dark": (False, True, False, 2, "--revision 0006"),
        "phase2-dual-read": (False, True, True, 2, "--revision 0006"),
        "phase3-canary": (True, True, True, 2, "--revision 0006"),
        "phase4-cutover": (True, False, True, 2, "--revision head"),
    }[phase]
    assert (multi, bool(v1), bool(v2), workers) == expected[:4]
    assert expected[4] in migrate_script(phase)
    assert forwarders == (0 if phase == "phase0-baseline" else 1)
    assert settings.forwarder_emit_v1 == bool(v1)  # v1 written as long as it is read
    assert accounts_optional(phase) is not multi  # the registry is required once multi is on
    if phase == "phase3-canary":
        assert settings.symbol_allowlist  # the canary trades a restricted set
    if phase == "phase4-cutover":
        assert not settings.symbol_allowlist
    if phase != "phase0-baseline":
        assert "db check" in migrate_script(phase)


@pytest.mark.parametrize("phase", PHASES)
def test_probes_hooks_and_workload_shape(phase: str) -> None:
    import streams.web  # noqa: F401 - registers the pages
    from streams.app import app

    pages = set(app.web.views)  # the status web server's routes
    data = config(phase)
    sts = one(phase, "StatefulSet")
    spec = sts["spec"]["template"]["spec"]
    (worker,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["http"] == int(data["TORGHUT_WEB_PORT"])
    probes = {k: worker[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] == "http"
        assert probe["path"] in pages, (probe["path"], pages)
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # table recovery
    grace = spec["terminationGracePeriodSeconds"]
    assert grace > 2 * float(data["TORGHUT_BROKER_SESSION_TIMEOUT_SECONDS"])  # > a rebalance
    assert worker["resources"]["requests"] and worker["resources"]["limits"]
    mounts = {m["name"]: m["mountPath"] for m in worker["volumeMounts"]}
    claims = [c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]]
    assert claims == ["data"] and mounts["data"] == data["TORGHUT_DATA_DIR"]
    assert worker["args"] == ["faust", "-A", "streams.app", "worker", "-l", "info"]
    pdb = one(phase, "PodDisruptionBudget")
    assert pdb["spec"]["selector"] == sts["spec"]["selector"]
    hooks = {j["metadata"]["name"]: j["metadata"]["annotations"] for j in by_kind(phase, "Job")}
    assert hooks["torghut-migrate"]["argocd.argoproj.io/hook"] == "PreSync"
    assert hooks["torghut-topics"]["argocd.argoproj.io/hook"] == "PreSync"
    assert int(hooks["torghut-migrate"]["argocd.argoproj.io/sync-wave"]) < int(
        hooks["torghut-topics"]["argocd.argoproj.io/sync-wave"]
    )
    topics = one(phase, "Job", "torghut-topics")["spec"]["template"]["spec"]["containers"][0]
    assert "topics --check" in topics["args"][0]


def test_docker_compose_uses_the_same_variable_names() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    names = set(compose["x-app-env"])
    for service in compose["services"].values():
        env = service.get("environment") or {}
        if service.get("build"):
            names |= set(env)
    assert names <= KNOWN_VARIABLES, names - KNOWN_VARIABLES
    k8s = set(config("phase1-dark"))
    shared = {"KAFKA_BROKERS", "DATABASE_URL", "TORGHUT_TOPIC_REPLICATION_FACTOR"}
    assert shared <= names and shared <= k8s
