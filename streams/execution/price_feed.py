"""The reference prices of the price collar: every worker reads the recent TA signals of every
symbol (no consumer group), because the worker that runs an account's lane is not, in general,
the one that evaluates a symbol's signals (signals are keyed by symbol, decisions by account).

At start each partition is read from the offset of `now - TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS`
(older prices would be refused anyway), then followed. Each signal's sizing price (price/close,
else VWAP, else the bid/ask mid) and event time go to the `OrderGuard`; a record that does not
decode is skipped here (the `signals` agent dead-letters it). Runs only when the collar is on
(`TRADING_PRICE_COLLAR_BPS` > 0).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas.codecs import DecodeError
from schemas.ta_signal import TaSignal
from streams.compat import refresh_metadata
from streams.errors import reopened_for_ever

log = logging.getLogger(__name__)


class Decoder(Protocol):
    async def decode(self, raw: bytes | None) -> TaSignal: ...


class PriceSink(Protocol):
    def record_price(self, symbol: str, price: Decimal, at: Any) -> None: ...


class PriceFeed:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        decoder: Decoder,
        sink: PriceSink,
        *,
        max_age_seconds: float,
        client_id: str = "torghut-prices",
        security: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        self.records = 0
        self.skipped = 0
        self._decoder = decoder
        self._sink = sink
        self._max_age = max_age_seconds
        self._bootstrap = bootstrap_servers
        self._client_id = client_id
        self._security = dict(security or {})

    async def run_forever(self, reopen_after: float = 2.0) -> None:
        await reopened_for_ever("price_feed", self.run, reopen_after)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=100,
            **self._security,
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await self._seek_recent(consumer, partitions)
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        await self.apply(record.value)
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        while True:
            # `topics()` fetches into a throwaway copy; the consumer's own metadata must move.
            await refresh_metadata(consumer)
            found = consumer.partitions_for_topic(self.topic)
            if found:
                return [TopicPartition(self.topic, p) for p in sorted(found)]
            log.info("waiting for the signals topic %s", self.topic)
            await asyncio.sleep(1.0)

    async def _seek_recent(self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]) -> None:
        since = int((time.time() - self._max_age) * 1000)
        offsets = await consumer.offsets_for_times(dict.fromkeys(tps, since))
        for tp in tps:
            found = offsets.get(tp)
            if found is None:
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, found.offset)

    async def apply(self, raw: bytes | None) -> None:
        try:
            signal = await self._decoder.decode(raw)
        except DecodeError:
            self.skipped += 1
            return
        price = signal.sizing_price
        if price is None or price <= 0:
            self.skipped += 1
            return
        self.records += 1
        self._sink.record_price(signal.symbol, Decimal(str(price)), signal.event_ts)
