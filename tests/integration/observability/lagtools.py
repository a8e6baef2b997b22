"""External views of a consumer group's lag, independent of the app's own code.

- `broker_offsets`: committed and end offsets straight from the broker (aiokafka admin/consumer).
- `consumer_groups_lag`: Apache Kafka's own `kafka-consumer-groups --describe` (the jars the local
  stack runs), the tool operators reach for first.

Burrow, the external lag evaluator operators run, has its own harness in `burrow.py`.
"""

from __future__ import annotations

import os
import subprocess

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from tests.support.stack import ROOT, StackInfo

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
