"""Consumer-group lag read from the broker: what an external lag exporter and dashboards see.

Committed offsets come from the group coordinator (`OffsetFetch`), end offsets from `ListOffsets`,
and lag in seconds from the timestamp of the next unconsumed record (the one at the committed
offset): that record's age is how far behind the group is in time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams.compat import refresh_metadata

NEXT_RECORD_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    lag: int
    lag_seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lag_records(committed: int | None, earliest: int, end: int) -> int:
    """Records not yet processed: from the committed offset (or the log start) to the end."""
    start = earliest if committed is None else max(committed, earliest)
    return max(0, end - start)


def lag_seconds(next_record_timestamp_ms: int | None, lag: int, now: datetime) -> float:
    """Age of the next unconsumed record; 0 when caught up or when its time is unknown."""
    if lag <= 0 or next_record_timestamp_ms is None or next_record_timestamp_ms < 0:
        return 0.0
    return max(0.0, now.timestamp() - next_record_timestamp_ms / 1000.0)


class BrokerLagReader:
    """Reads one consumer group's lag from the broker; never joins the group."""

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        client_id: str = "torghut-lag",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self._security = dict(security or {})  # `streams.kafka_security.aiokafka_kwargs`
        self.group_id = group_id
        self._client_id = client_id
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._consumer is not None:
            return
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, client_id=self._client_id, **self._security
        )
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            **self._security,
        )
        await admin.start()
        try:
            await consumer.start()
        except BaseException:
            await admin.close()
            raise
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> BrokerLagReader:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            raise RuntimeError("BrokerLagReader is not started")
        return self._admin, self._consumer

    async def ping(self) -> None:
        """Raises unless a broker answers a metadata request."""
        admin, _ = self._clients()
        await admin.describe_cluster()

    async def committed(self) -> dict[TopicPartition, int]:
        admin, _ = self._clients()
        offsets = await admin.list_consumer_group_offsets(self.group_id)
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        _, consumer = self._clients()
        wanted = sorted(set(topics))
        await refresh_metadata(consumer)
        out: list[TopicPartition] = []
        for topic in wanted:
            for p in sorted(consumer.partitions_for_topic(topic) or ()):
                out.append(TopicPartition(topic, p))
        return out

    async def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """Partition count of each existing topic (from cached metadata when known)."""
        _, consumer = self._clients()
        names = set(topics)
        if any(consumer.partitions_for_topic(t) is None for t in names):
            await refresh_metadata(consumer)
        return {t: len(consumer.partitions_for_topic(t) or ()) for t in names}

    async def read(
        self,
        topics: Iterable[str] = (),
        *,
        only: Iterable[TopicPartition] | None = None,
        now: datetime | None = None,
    ) -> list[PartitionLag]:
        """Lag of every partition of `topics` plus every partition the group committed.

        `only` restricts the answer to those partitions (e.g. the ones a worker owns).
        """
        async with self._lock:
            committed = await self.committed()
            tps = set(await self.partitions(topics)) | set(committed)
            if only is not None:
                tps &= set(only)
            if not tps:
                return []
            return await self._lag_of(sorted(tps), committed, now or datetime.now(UTC))

    async def _lag_of(
        self, tps: list[TopicPartition], committed: Mapping[TopicPartition, int], now: datetime
    ) -> list[PartitionLag]:
        _, consumer = self._clients()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(tps)
        lags = {
            tp: lag_records(committed.get(tp), starts.get(tp, 0), ends.get(tp, 0)) for tp in tps
        }
        behind = {
            tp: (committed[tp] if tp in committed else starts.get(tp, 0))
            for tp, n in lags.items()
            if n > 0
        }
        stamps = await self._next_timestamps(behind)
        return [
            PartitionLag(
                topic=tp.topic,
                partition=tp.partition,
                committed=committed.get(tp),
                end=ends.get(tp, 0),
                lag=lags[tp],
                lag_seconds=lag_seconds(stamps.get(tp), lags[tp], now),
            )
            for tp in tps
        ]

    async def _next_timestamps(
        self, positions: Mapping[TopicPartition, int]
    ) -> dict[TopicPartition, int]:
        """Timestamp (ms) of the first record at or after each position."""
        if not positions:
            return {}
        _, consumer = self._clients()
        consumer.assign(list(positions))
        for tp, offset in positions.items():
            consumer.seek(tp, offset)
        found: dict[TopicPartition, int] = {}
        deadline = time.monotonic() + NEXT_RECORD_TIMEOUT_SECONDS
        while len(found) < len(positions) and time.monotonic() < deadline:
            pending = [tp for tp in positions if tp not in found]
            batch = await consumer.getmany(*pending, timeout_ms=200, max_records=len(pending))
            for tp, records in batch.items():
                if records and tp not in found:
                    found[tp] = records[0].timestamp
        consumer.assign([])
        return found
