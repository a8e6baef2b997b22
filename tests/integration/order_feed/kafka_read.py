"""Read a topic from the beginning without a consumer group (all partitions)."""

from __future__ import annotations

import time
from typing import Any

from aiokafka import AIOKafkaConsumer


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 30.0
) -> list[Any]:
    """Records of `topic` until `expect` arrived or `timeout`; then one short drain for extras."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        metadata_max_age_ms=500,
    )
    await consumer.start()
    try:
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(out) < expect and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                out.extend(messages)
        batch = await consumer.getmany(timeout_ms=300)
        for messages in batch.values():
            out.extend(messages)
        return out
    finally:
        await consumer.stop()
