"""Trade-updates forwarder: each account's Alpaca `trade_updates` stream → Kafka v2 (and v1).

For the local stack and for deployments without the Kotlin forwarder. One alpaca-py
`TradingStream` per account runs in this process's event loop (its `run()` calls `asyncio.run`,
so its `_run_forever()` coroutine is awaited instead). Every event becomes a v2 envelope (and a v1
one when `TORGHUT_FORWARDER_EMIT_V1=true`), keyed by symbol like the Kotlin forwarder.

The stream replays nothing after a reconnect, so every (re)connection asks the worker that owns
the account to reconcile it at once: a `ReconcileRequest` keyed by the account label goes to the
re-keyed account-updates topic, which is co-partitioned with the decisions topic, so it lands on
exactly the worker that runs that account's lane and reconciler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from streams.compat import ObservedTradingStream
from streams.domain.accounts import Account
from streams.domain.trade_updates.model import ReconcileRequest, encode_record
from streams.forwarder.envelope import SeqTracker, envelopes_for, symbol_of

log = logging.getLogger(__name__)

FORWARDED = Counter(
    "torghut_forwarder_events_total",
    "Trade updates forwarded to Kafka, by account and envelope version.",
    ["account", "version"],
)
CONNECTS = Counter(
    "torghut_forwarder_connects_total",
    "Trade-updates stream (re)connections, by account; each one triggers a reconcile.",
    ["account"],
)
FAILURES = Counter(
    "torghut_forwarder_failures_total",
    "Trade updates not forwarded (bad message or Kafka error), by account and reason.",
    ["account", "reason"],
)


def stream_url(base_url: str) -> str:
    """The account's trade stream: `https://host[:port]` → `wss://host[:port]/stream`."""
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/stream", "", ""))


@dataclass(frozen=True)
class ForwarderTopics:
    v2: str | None
    v1: str | None
    reconcile: str | None  # the re-keyed account-updates topic; None: no reconcile requests


class AccountForwarder:
    """Forwards one account's trade updates; never raises out of the stream's handler."""

    def __init__(
        self,
        account: Account,
        producer: AIOKafkaProducer,
        topics: ForwarderTopics,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.account = account
        self.label = account.label
        self._producer = producer
        self._topics = topics
        self._clock = clock
        self._seq = SeqTracker()
        self.connects = 0
        self.forwarded = 0
        self._background: set[asyncio.Task[None]] = set()
        self.stream = ObservedTradingStream(
            account.api_key.get_secret_value(),
            account.secret_key.get_secret_value(),
            paper=not account.is_live,
            raw_data=True,
            url_override=stream_url(account.base_url),
            on_connected=self.on_connected,
        )
        self.stream.subscribe_trade_updates(self.on_message)

    async def run(self) -> None:
        await self.stream.run_in_loop()

    async def stop(self) -> None:
        await self.stream.stop_ws()
        await self.stream.close()
        for task in list(self._background):
            task.cancel()

    async def on_connected(self) -> None:
        """Count the connection and ask for a reconcile in the background (the stream must
        not wait on Kafka: the request topic may not exist yet when a worker is still starting)."""
        self.connects += 1
        CONNECTS.labels(self.label).inc()
        log.info(
            "trade updates stream connected",
            extra={"account": self.label, "connects": self.connects},
        )
        if self._topics.reconcile is not None:
            task = asyncio.create_task(self._request_reconcile(self._topics.reconcile))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _request_reconcile(self, topic: str) -> None:
        request = ReconcileRequest(
            account_label=self.label, reason="forwarder_connected", requested_at=self._clock()
        )
        try:
            await self._producer.send_and_wait(
                topic, encode_record(request), key=self.label.encode()
            )
        except Exception as exc:  # noqa: BLE001 - the timer reconciles anyway
            FAILURES.labels(self.label, "reconcile_request").inc()
            log.warning(
                "reconcile request not sent",
                extra={"account": self.label, "error": type(exc).__name__},
            )

    async def on_message(self, message: Any) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict):
            FAILURES.labels(self.label, "bad_message").inc()
            log.warning("trade update without data object dropped", extra={"account": self.label})
            return
        records = envelopes_for(
            data,
            account_label=self.label,
            seq=self._seq.next(symbol_of(data)),
            ingest_ts=self._clock(),
            emit_v1=self._topics.v1 is not None,
        )
        for version, key, value in records:
            topic = self._topics.v2 if version == 2 else self._topics.v1
            if topic is not None:
                await self._send(topic, key, value, version)
        self.forwarded += 1

    async def _send(self, topic: str, key: bytes, value: bytes, version: int) -> None:
        try:
            await self._producer.send_and_wait(topic, value, key=key)
            FORWARDED.labels(self.label, str(version)).inc()
        except Exception as exc:  # noqa: BLE001 - the reconciler repairs a lost event
            FAILURES.labels(self.label, "kafka").inc()
            log.warning(
                "trade update not forwarded",
                extra={"account": self.label, "topic": topic, "error": type(exc).__name__},
            )


class TradeUpdatesForwarder:
    """All accounts' forwarders on one Kafka producer; `run()` until `stop` is set."""

    def __init__(
        self,
        accounts: Sequence[Account],
        bootstrap_servers: str,
        topics: ForwarderTopics,
        security: Mapping[str, Any] | None = None,
    ) -> None:
        if topics.v2 is None and topics.v1 is None:
            raise ValueError("the forwarder needs a v2 or a v1 trade-updates topic")
        self.accounts = tuple(accounts)
        self.topics = topics
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            **(security or {}),  # `streams.kafka_security.aiokafka_kwargs`
        )
        self.forwarders: list[AccountForwarder] = []

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until `stop` is set (or this task is cancelled); then close everything."""
        await self.producer.start()
        tasks: list[asyncio.Task[None]] = []
        try:
            self.forwarders = [
                AccountForwarder(a, self.producer, self.topics) for a in self.accounts
            ]
            tasks = [
                asyncio.create_task(f.run(), name=f"forwarder:{f.label}") for f in self.forwarders
            ]
            log.info(
                "trade-updates forwarder started",
                extra={"accounts": [f.label for f in self.forwarders]},
            )
            await stop.wait()
        finally:
            await asyncio.shield(self._stop(tasks))
            await self.producer.stop()

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for forwarder in self.forwarders:
            with contextlib.suppress(Exception):
                await forwarder.stop()
        _, pending = await asyncio.wait(tasks, timeout=6) if tasks else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
