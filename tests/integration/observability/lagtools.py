"""External views of a consumer group's lag, independent of the app's own code.

- `broker_offsets`: committed and end offsets straight from the broker (aiokafka admin/consumer).
- `consumer_groups_lag`: Apache Kafka's own `kafka-consumer-groups --describe` (the jars the local
  stack runs), the tool operators reach for first.
- `KafkaExporter`: danielqsj/kafka_exporter (Prometheus `kafka_consumergroup_lag`), built by
  `stack/kafka_exporter.sh` from the Go module proxy.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import requests
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import ROOT, StackInfo, free_port

# The jars of the broker the stack runs (stack/stack.py: one folder per TORGHUT_KAFKA_VERSION).
KAFKA_LIBS = (
    ROOT / ".cache" / "kafka" / (os.environ.get("TORGHUT_KAFKA_VERSION") or "3.9.1") / "libs"
)
Offsets = dict[tuple[str, int], tuple[int | None, int]]


async def broker_offsets(bootstrap: str, group: str, topic: str) -> Offsets:
    """(committed or None, end) per partition of `topic` for `group`."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        partitions = await admin.describe_topics([topic])
        tps = [TopicPartition(topic, p["partition"]) for p in partitions[0]["partitions"]]
        ends = await consumer.end_offsets(tps)
        out: Offsets = {}
        for tp in tps:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            out[(tp.topic, tp.partition)] = (offset, ends[tp])
        return out
    finally:
        await consumer.stop()
        await admin.close()


def consumer_groups_lag(stack: StackInfo, group: str) -> dict[tuple[str, int], int]:
    """LAG column of `kafka-consumer-groups --describe --group` (partitions with a commit)."""
    cmd = [
        "java",
        "-Xmx128m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-cp",
        f"{KAFKA_LIBS}/*",
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        stack.bootstrap,
        "--describe",
        "--group",
        group,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=True).stdout
    lags: dict[tuple[str, int], int] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 6 and cols[0] == group and cols[2].isdigit() and cols[5].isdigit():
            lags[(cols[1], int(cols[2]))] = int(cols[5])
    return lags


def build_kafka_exporter() -> tuple[Path | None, str]:
    """The exporter binary, or None and the reason it could not be built."""
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(ROOT / "stack" / "kafka_exporter.sh")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        return None, result.stderr.strip()
    return Path(
        result.stdout.strip().splitlines()[-1]
    ), f"ready in {time.monotonic() - started:.0f}s"


class KafkaExporter:
    """One kafka_exporter process on a free port, stopped by its PID."""

    def __init__(self, binary: Path, stack: StackInfo) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--kafka.server={stack.bootstrap}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--kafka.version=3.9.0",
                "--refresh.metadata=1s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ},
            start_new_session=True,
        )

    def group_lag(self, group: str) -> dict[tuple[str, int], int]:
        text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=10).text
        lags: dict[tuple[str, int], int] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "kafka_consumergroup_lag":
                continue
            for s in family.samples:
                if s.labels.get("consumergroup") == group:
                    lags[(s.labels["topic"], int(s.labels["partition"]))] = int(s.value)
        return lags

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@contextlib.contextmanager
def kafka_exporter(binary: Path, stack: StackInfo) -> Iterator[KafkaExporter]:
    exporter = KafkaExporter(binary, stack)
    try:
        yield exporter
    finally:
        exporter.stop()
