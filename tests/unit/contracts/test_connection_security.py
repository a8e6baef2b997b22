"""Kafka and Postgres connection settings: one module builds them, secrets only from files and
never in an error; live trading on unreplicated state refuses to start; the topics check."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest

from streams.context import ConfigurationError, load_accounts, unreplicated_live_problem
from streams.domain import secrets
from streams.domain.accounts import load_registry
from streams.kafka_security import KafkaConfigError, aiokafka_kwargs, describe_failure
from streams.persistence.dsn import DatabaseConfigError, database_dsn
from streams.topic_plan import ClusterTopic, TopicSpec, check_topics
from tests.unit.contracts.conftest import PLANTED_SECRET, MakeSettings

CA = ssl.get_default_verify_paths().cafile or ""


def password_file(tmp_path: Path, value: str = PLANTED_SECRET) -> Path:
    path = tmp_path / "password"
    path.write_text(value + "\n")  # a mounted Secret often ends with a newline
    return path


def test_plaintext_by_default(make_settings: MakeSettings) -> None:
    assert aiokafka_kwargs(make_settings()) == {"security_protocol": "PLAINTEXT"}


def test_sasl_ssl_reads_the_password_file(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="torghut",
        KAFKA_SASL_PASSWORD_FILE=str(password_file(tmp_path)),
    )
    kwargs = aiokafka_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "torghut"
    assert kwargs["sasl_plain_password"] == PLANTED_SECRET  # newline stripped
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode is ssl.CERT_REQUIRED
    # the password is now scrubbed from logs and error text
    assert PLANTED_SECRET not in secrets.scrub(f"failed with {PLANTED_SECRET}")


def test_sasl_without_user_or_password_file_is_a_config_error(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    with pytest.raises(KafkaConfigError, match="KAFKA_SASL_USERNAME"):
        aiokafka_kwargs(make_settings(KAFKA_SECURITY_PROTOCOL="SASL_SSL"))
    with pytest.raises(KafkaConfigError, match="KAFKA_SASL_PASSWORD_FILE"):
        aiokafka_kwargs(
            make_settings(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_USERNAME="u")
        )
    with pytest.raises(KafkaConfigError, match="unreadable"):
        aiokafka_kwargs(
            make_settings(
                KAFKA_SECURITY_PROTOCOL="SASL_SSL",
                KAFKA_SASL_USERNAME="u",
                KAFKA_SASL_PASSWORD_FILE=str(tmp_path / "absent"),
            )
        )
    with pytest.raises(KafkaConfigError, match="KAFKA_SSL_CA_FILE"):
        aiokafka_kwargs(
            make_settings(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CA_FILE=str(tmp_path / "no"))
        )


def test_auth_failure_message_names_settings_not_the_password(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = make_settings(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="torghut",
        KAFKA_SASL_PASSWORD_FILE=str(password_file(tmp_path)),
    )
    aiokafka_kwargs(settings)  # registers the password

    class SaslAuthenticationFailed(Exception):
        pass

    text = describe_failure(settings, SaslAuthenticationFailed(f"bad password {PLANTED_SECRET}"))
    assert "authentication failed for user 'torghut'" in text
    assert "KAFKA_SASL_PASSWORD_FILE" in text
    assert PLANTED_SECRET not in text


def test_database_dsn_password_file_and_tls(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(
        DATABASE_URL="postgresql://torghut@db.example:5432/torghut?application_name=w",
        DATABASE_PASSWORD_FILE=str(password_file(tmp_path, "p@ss/w:rd")),
        DATABASE_SSLMODE="verify-full",
        DATABASE_SSL_ROOT_CERT_FILE=CA,
    )
    dsn = database_dsn(settings)
    assert dsn.startswith("postgresql://torghut:p%40ss%2Fw%3Ard@db.example:5432/torghut?")
    assert "sslmode=verify-full" in dsn and "application_name=w" in dsn
    assert "sslrootcert=" in dsn
    assert "p@ss/w:rd" not in secrets.scrub("connect p@ss/w:rd")


def test_database_dsn_unchanged_without_files(make_settings: MakeSettings) -> None:
    plain = make_settings(DATABASE_URL="postgresql://u:pw@h/db")
    assert database_dsn(plain) == "postgresql://u:pw@h/db"


def test_database_dsn_missing_files_are_config_errors(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    with pytest.raises(DatabaseConfigError, match="DATABASE_SSL_ROOT_CERT_FILE"):
        database_dsn(make_settings(DATABASE_SSL_ROOT_CERT_FILE=str(tmp_path / "absent.pem")))
    with pytest.raises(DatabaseConfigError, match="DATABASE_PASSWORD_FILE"):
        database_dsn(make_settings(DATABASE_PASSWORD_FILE=str(tmp_path / "absent")))


# ---------------------------------------------------------------- live trading, replication 1

LIVE = [
    {"label": "live-a", "mode": "live", "api_key": "AKLIVE0123456789", "secret_key": "s" * 30},
    {"label": "paper-b", "mode": "paper", "api_key": "PKPAPER0123456789", "secret_key": "t" * 30},
]


def live_settings(make_settings: MakeSettings, **env: str) -> object:
    return make_settings(
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_LIVE_ENABLED="true",
        TRADING_ACCOUNTS_JSON=json.dumps(LIVE),
        TRADING_ACCOUNT_LABEL="live-a",
        **env,
    )


def test_live_account_on_replication_factor_1_refuses_to_start(
    make_settings: MakeSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = live_settings(make_settings, TORGHUT_TOPIC_REPLICATION_FACTOR="1")
    with pytest.raises(ConfigurationError) as refused:
        load_accounts(settings)  # type: ignore[arg-type]
    err = str(refused.value)
    assert "live-a" in err and "TORGHUT_ALLOW_UNREPLICATED_STATE" in err
    assert "s" * 30 not in err


def test_override_paper_only_and_replicated_state_start(make_settings: MakeSettings) -> None:
    for env in (
        {"TORGHUT_TOPIC_REPLICATION_FACTOR": "1", "TORGHUT_ALLOW_UNREPLICATED_STATE": "true"},
        {},  # default replication factor 3
    ):
        settings = live_settings(make_settings, **env)
        assert load_accounts(settings).labels == ("live-a", "paper-b")  # type: ignore[arg-type]
    paper = make_settings(TORGHUT_TOPIC_REPLICATION_FACTOR="1")
    assert unreplicated_live_problem(paper, load_registry(paper, strict=False)) is None


# ---------------------------------------------------------------- topics --check


def spec(name: str, policy: str = "delete", co: bool = True, state: bool = True) -> TopicSpec:
    return TopicSpec(name, 4, policy, co, state)


def cluster(
    name: str, partitions: int = 4, rf: int = 3, isr: int | None = None, **configs: str
) -> ClusterTopic:
    replicas = {p: list(range(rf)) for p in range(partitions)}
    in_sync = {p: list(range(rf if isr is None else isr)) for p in range(partitions)}
    return ClusterTopic(name, replicas, in_sync, {"min.insync.replicas": "2", **configs})


def test_topics_check_names_every_problem() -> None:
    specs = [
        spec("ok"),
        spec("missing"),
        spec("parts"),
        spec("one-copy"),
        spec("lagging"),
        spec("control", "compact"),
        spec("isr"),
        spec("dlq", co=False, state=False),
    ]
    found = {
        "ok": cluster("ok", **{"cleanup.policy": "delete"}),
        "parts": cluster("parts", partitions=3),
        "one-copy": cluster("one-copy", rf=1),
        "lagging": cluster("lagging", isr=2),
        "control": cluster("control", **{"cleanup.policy": "delete"}),
        "isr": cluster("isr", **{"min.insync.replicas": "1"}),
        "dlq": cluster("dlq", partitions=1),  # not co-partitioned: any count
    }
    problems = check_topics(specs, found, replication_factor=3, min_insync_replicas=2)
    assert problems == [
        "missing: missing",
        "parts: 3 partitions, want 4 (co-partitioned with the tables and the decisions topic)",
        "one-copy: under-replicated: replication factor 1, want 3",
        "lagging: under-replicated: partitions 0, 1, 2, 3 have replicas out of sync",
        "control: cleanup.policy=delete, want compact",
        "isr: min.insync.replicas=1, want 2",
    ]
    assert check_topics(specs[:1], found, replication_factor=3, min_insync_replicas=2) == []


def test_secrets_dir_files_are_settings(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streams.settings import load_settings

    (tmp_path / "APCA_API_KEY_ID").write_text("PKFROMAFILE0123\n")
    (tmp_path / "APCA_API_SECRET_KEY").write_text("secret-from-a-file-0123")
    make_settings(TORGHUT_SECRETS_DIR=str(tmp_path), APCA_API_SECRET_KEY="env-wins-0123")
    settings = load_settings()
    assert settings.apca_api_key_id is not None and settings.apca_api_secret_key is not None
    assert settings.apca_api_key_id.get_secret_value() == "PKFROMAFILE0123"
    assert settings.apca_api_secret_key.get_secret_value() == "env-wins-0123"
