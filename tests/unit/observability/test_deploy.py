"""The deploy/ files: a Grafana dashboard with the lag/flow/latency panels, and Prometheus
configuration that scrapes the workers (Burrow, not a Prometheus exporter, watches the group)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "torghut-streams.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_covers_lag_flow_and_latency() -> None:
    exprs = " ".join(dashboard_exprs())
    for needed in (
        "torghut_consumer_committed_offset",
        "torghut_consumer_lag_records",
        "torghut_consumer_lag_seconds",
        "torghut_lane_decisions_total",
        "torghut_lane_orders_submitted_total",
        "torghut_lane_rejections_total",
        "torghut_signal_to_broker_ack_seconds_bucket",
        "torghut_broker_call_seconds_bucket",
    ):
        assert needed in exprs, needed


def test_dashboard_metrics_exist_in_the_app_registry() -> None:
    from prometheus_client import REGISTRY

    import streams.observability.metrics  # noqa: F401 - registers the metrics

    known = {s.name for family in REGISTRY.collect() for s in family.samples} | {
        family.name for family in REGISTRY.collect()
    }
    referenced = set(re.findall(r"torghut_[a-z_]+", " ".join(dashboard_exprs())))
    owned_elsewhere = {"torghut_dead_letters_total"}  # streams/dlq.py
    missing = {
        name
        for name in referenced - owned_elsewhere
        if name not in known and re.sub(r"_(bucket|count|sum|total)$", "", name) not in known
    }
    assert not missing


def test_prometheus_config_scrapes_the_workers() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["torghut-streams"]["metrics_path"] == "/metrics"
    assert jobs["torghut-streams"]["dns_sd_configs"][0]["port"] == 6066
    assert set(jobs) == {"torghut-streams"}
    for rule_file in config["rule_files"]:
        rules = yaml.safe_load((DEPLOY / rule_file).read_text())
        assert all(rule["expr"] for group in rules["groups"] for rule in group["rules"])


def test_burrow_config_watches_the_app_group_on_loopback() -> None:
    import tomllib

    from streams.settings import Settings

    config = tomllib.loads((DEPLOY / "burrow" / "burrow.toml").read_text())
    (consumer,) = config["consumer"].values()
    (cluster_name,) = config["cluster"]
    assert consumer["class-name"] == "kafka" and consumer["cluster"] == cluster_name
    default_group = Settings.model_fields["app_id"].default
    assert re.fullmatch(consumer["group-whitelist"], default_group)
    assert not re.fullmatch(consumer["group-whitelist"], f"{default_group}-other")
    assert config["httpserver"]["default"]["address"].startswith("127.0.0.1:")
    assert config["client-profile"][consumer["client-profile"]]["kafka-version"] == "2.0.0"
    # A window of several commits, or STOP/STALL cannot be told from a pause.
    assert config["storage"]["default"]["intervals"] >= 5
    assert config["evaluator"]["default"]["class-name"] == "caching"
