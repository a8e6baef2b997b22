"""Read a table's changelog topic straight from Kafka: the table's state without a worker."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.compat import refresh_metadata

READ_TIMEOUT_SECONDS = 30.0


async def read_table_state(
    bootstrap: str,
    topic: str,
    timeout: float = READ_TIMEOUT_SECONDS,
    security: Mapping[str, Any] | None = None,
) -> dict[bytes, bytes]:
    """Latest value per key of a changelog topic (tombstones remove the key)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        **(security or {}),  # `streams.kafka_security.aiokafka_kwargs`
    )
    await consumer.start()
    try:
        await refresh_metadata(consumer)
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        tps = [TopicPartition(topic, p) for p in partitions]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        state: dict[bytes, bytes] = {}
        pending = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=500)
            for records in batch.values():
                for record in records:
                    if record.key is None:
                        continue
                    if record.value is None:
                        state.pop(record.key, None)
                    else:
                        state[record.key] = record.value
            pending = {tp for tp in pending if await consumer.position(tp) < ends[tp]}
        if pending:
            raise TimeoutError(f"{topic}: not read to its end within {timeout:g}s")
        return state
    finally:
        await consumer.stop()
