"""Kafka with SASL/SCRAM-SHA-512 over TLS, as Strimzi clusters run it.

The test starts its own broker (the stack's jars, its own folder, free loopback ports) with only
a SASL_SSL listener: certificates from a throwaway CA, SCRAM users created at format time. The
worker, CLI commands (topics, topics --check, kill-switch, lag), the forwarder's producer and
a bulk-restore child process all connect with the settings from `streams/kafka_security.py`;
a wrong password is a clear start-up error (exit 78) that contains no password.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka_security import aiokafka_kwargs
from streams.settings import Settings
from tests.support.stack import ROOT, StackInfo, app_env, free_port
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex[:12]
USER = "torghut"
USER_PASSWORD = "scram-" + uuid.uuid4().hex  # must never appear in any output
WRONG_PASSWORD = "wrong-" + uuid.uuid4().hex


def stack_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torghut_stack", ROOT / "stack" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class SecureKafka:
    brokers: str  # kafka://127.0.0.1:PORT
    ca: Path
    password_file: Path
    folder: Path

    def env(self, password_file: Path | None = None) -> dict[str, str]:
        return {
            "KAFKA_BROKERS": self.brokers,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD_FILE": str(password_file or self.password_file),
            "KAFKA_SSL_CA_FILE": str(self.ca),
            "TORGHUT_TOPIC_REPLICATION_FACTOR": "1",
        }

    def settings(self) -> Settings:
        return Settings.model_validate(self.env())


def start_secure_kafka(stack: Any, folder: Path, certs: dict[str, Path]) -> tuple[Any, int]:
    """A SASL_SSL broker on fresh loopback ports (started, not yet ready)."""
    port, controller = free_port(), free_port()
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}";'
    )
    overrides = (
        ("listeners", f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"),
        ("advertised.listeners", f"SASL_SSL://127.0.0.1:{port}"),
        ("listener.security.protocol.map", "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT"),
        ("inter.broker.listener.name", "SASL_SSL"),
        ("sasl.enabled.mechanisms", "SCRAM-SHA-512"),
        ("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512"),
        ("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config", jaas),
        ("ssl.keystore.type", "PEM"),
        ("ssl.keystore.location", str(certs["keystore"])),
        ("ssl.truststore.type", "PEM"),
        ("ssl.truststore.location", str(certs["ca"])),
        ("ssl.endpoint.identification.algorithm", "https"),
    )
    users = (
        "--add-scram", f"SCRAM-SHA-512=[name=admin,password={ADMIN_PASSWORD}]",
        "--add-scram", f"SCRAM-SHA-512=[name={USER},password={USER_PASSWORD}]",
    )  # fmt: skip
    kafka = stack.Kafka(port, controller, folder / "kafka", overrides, users)
    kafka.start()
    return kafka, port


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[SecureKafka]:
    stack = stack_script()
    folder = ROOT / ".cache" / "test-kafka-sasl" / uuid.uuid4().hex[:8]
    certs = stack.make_certs(folder / "tls")
    password_file = folder / "kafka-password"
    password_file.write_text(USER_PASSWORD + "\n")
    kafka: Any = None
    try:
        # Two attempts: a "free" loopback port can be taken by another process between the
        # choice and the broker's bind (the broker then exits at once); the first failure's
        # logs are printed for the post-mortem.
        for attempt in (1, 2):
            if kafka is not None:
                kafka.stop()
                shutil.rmtree(folder / "kafka", ignore_errors=True)
            kafka, port = start_secure_kafka(stack, folder, certs)
            info = SecureKafka(f"kafka://127.0.0.1:{port}", certs["ca"], password_file, folder)
            try:
                asyncio.run(kafka.wait_ready(**aiokafka_kwargs(info.settings())))
                break
            except SystemExit as exc:
                if attempt == 2:
                    raise
                print(f"secure kafka attempt {attempt} failed: {exc}")
        yield info
    finally:
        if kafka is not None:
            kafka.stop()
        shutil.rmtree(folder, ignore_errors=True)


def faust(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streams.app", *args],
        cwd=ROOT,
        env={**os.environ, "TORGHUT_LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def create_topic(kafka: SecureKafka, name: str) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=kafka.brokers.removeprefix("kafka://"),
        **aiokafka_kwargs(kafka.settings()),
    )
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()


async def read_topic(kafka: SecureKafka, topic: str, expect: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.brokers.removeprefix("kafka://"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **aiokafka_kwargs(kafka.settings()),
    )
    await consumer.start()
    try:
        consumer.subscribe([topic])
        out: list[Any] = []
        for _ in range(60):
            batch = await consumer.getmany(timeout_ms=500)
            out += [r for rs in batch.values() for r in rs]
            if len(out) >= expect:
                break
        return out
    finally:
        await consumer.stop()


async def test_worker_and_cli_over_sasl_ssl(
    secure_kafka: SecureKafka, stack: StackInfo, pg_dsn: str, tmp_path: Path
) -> None:
    env = app_env("sasl", **secure_kafka.env(), DATABASE_URL=pg_dsn)
    assert faust(env, "db", "upgrade").returncode == 0
    created = faust(env, "topics")
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"{env['TORGHUT_CONTROL_TOPIC']}\tcreated" in created.stdout
    check = faust(env, "topics", "--check")
    assert check.returncode == 0, check.stdout + check.stderr

    worker = Worker(StackInfo(secure_kafka.brokers, pg_dsn), env, tmp_path / "w")
    worker.start()
    try:
        # /readyz 200: the lag reader (Kafka probe), the control feed read to its end, faust's
        # consumer group and table recovery: all over SASL_SSL.
        worker.wait_ready(timeout=120)
        switch = faust(env, "kill-switch", "--account", "paper", "--on", "--reason", "drill")
        assert switch.returncode == 0, switch.stdout + switch.stderr
        records = await read_topic(secure_kafka, env["TORGHUT_CONTROL_TOPIC"], 1)
        assert len(records) == 1 and records[0].key == b"kill_switch:paper"
        lag = faust(env, "lag", "--json")
        assert lag.returncode == 0, lag.stdout + lag.stderr
        assert env["TORGHUT_DECISIONS_TOPIC"] in lag.stdout
    finally:
        worker.stop()
    out = worker.output + created.stdout + created.stderr + lag.stdout + lag.stderr
    assert USER_PASSWORD not in out


async def test_forwarder_producer_over_sasl_ssl(secure_kafka: SecureKafka) -> None:
    from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder

    topic = "sasl-fwd-" + uuid.uuid4().hex[:8]
    await create_topic(secure_kafka, topic)
    forwarder = TradeUpdatesForwarder(
        [],
        secure_kafka.brokers.removeprefix("kafka://"),
        ForwarderTopics(v2=topic, v1=None, reconcile=None),
        aiokafka_kwargs(secure_kafka.settings()),
    )
    await forwarder.producer.start()
    try:
        await forwarder.producer.send_and_wait(topic, b"update", key=b"paper")
    finally:
        await forwarder.producer.stop()
    assert [r.value for r in await read_topic(secure_kafka, topic, 1)] == [b"update"]


async def test_bulk_restore_child_over_sasl_ssl(secure_kafka: SecureKafka, tmp_path: Path) -> None:
    topic = "sasl-changelog-" + uuid.uuid4().hex[:8]
    await create_topic(secure_kafka, topic)
    producer = AIOKafkaProducer(
        bootstrap_servers=secure_kafka.brokers.removeprefix("kafka://"),
        acks="all",
        **aiokafka_kwargs(secure_kafka.settings()),
    )
    await producer.start()
    try:
        for i in range(50):
            await producer.send(topic, value=b"v%d" % i, key=b"k%d" % (i % 10))
        await producer.flush()
    finally:
        await producer.stop()
    job = {
        "bootstrap": [secure_kafka.brokers.removeprefix("kafka://")],
        "client_id": "sasl-restore",
        "max_partition_fetch_bytes": 1 << 20,
        "check_crcs": True,
        "isolation_level": "read_uncommitted",
        "folder": str(tmp_path),
        "chunk_bytes": 1 << 20,
        "ranges": [
            {
                "topic": topic,
                "partition": 0,
                "start": 0,
                "end": 50,
                "rocksdb": {
                    "max_open_files": 100,
                    "write_buffer_size": 1 << 20,
                    "target_file_size_base": 1 << 20,
                    "max_write_buffer_number": 2,
                    "bloom_filter_size": 3,
                    "block_cache_size": 1 << 20,
                },
            }
        ],
    }
    child = subprocess.run(
        [sys.executable, "-m", "streams.state.sst_worker"],
        input=json.dumps(job),
        cwd=ROOT,
        env={**os.environ, **secure_kafka.env()},  # the worker passes its environment down
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    lines = [json.loads(line) for line in child.stdout.splitlines()]
    assert lines[-1]["applied"] == 49 and lines[-1]["path"] is not None
    assert Path(lines[-1]["path"]).exists()


async def test_wrong_password_is_a_clear_startup_error(
    secure_kafka: SecureKafka, pg_dsn: str, tmp_path: Path
) -> None:
    wrong = tmp_path / "wrong-password"
    wrong.write_text(WRONG_PASSWORD)
    env = app_env("sasl-bad", **secure_kafka.env(password_file=wrong), DATABASE_URL=pg_dsn)
    topics = faust(env, "topics")
    assert topics.returncode == 78, topics.stdout + topics.stderr
    assert f"Kafka authentication failed for user '{USER}'" in topics.stderr
    assert "KAFKA_SASL_PASSWORD_FILE" in topics.stderr

    worker = Worker(StackInfo(secure_kafka.brokers, pg_dsn), env, tmp_path / "w").start()
    try:
        assert worker.wait_exit(timeout=90) == 78
    finally:
        worker.stop()
    worker.wait_for_log("refusing to start: Kafka authentication failed", timeout=5)
    for text in (topics.stdout + topics.stderr, worker.output):
        assert WRONG_PASSWORD not in text and USER_PASSWORD not in text
