"""Small aiokafka helpers for integration tests: topics, producing, draining a topic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic


async def create_topics(
    bootstrap: str, names: Iterable[str], partitions: int = 4, compact: Sequence[str] = ()
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                n,
                partitions,
                1,
                topic_configs={"cleanup.policy": "compact" if n in compact else "delete"},
            )
            for n in names
            if n not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


async def produce(
    bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 30.0,
    idle: float = 1.0,
) -> list[Any]:
    """Read a topic from the beginning until `expect` records arrived (or `idle` s of silence)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        deadline = time.monotonic() + timeout
        while not partitions and time.monotonic() < deadline:
            await consumer.topics()  # refreshes cluster metadata
            partitions = consumer.partitions_for_topic(topic) or set()
            await asyncio.sleep(0.2)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Any] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for msgs in batch.values():
                out.extend(msgs)
                last = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() - last > idle:
                break
        return out
    finally:
        await consumer.stop()
