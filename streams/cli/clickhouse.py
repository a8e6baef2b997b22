"""ClickHouse commands: `clickhouse init-schema | freshness` and the historical `replay`.

    faust -A streams.app clickhouse init-schema [--ttl-days 14]
    faust -A streams.app clickhouse freshness      (exit 1 when a class is stale)
    faust -A streams.app replay --from TS --to TS [--symbols A,B] [--accounts a,b]

They run inline (no faust worker). With the embedded engine (`CLICKHOUSE_DSN=chdb://...`) a
command needs the chdb path for itself: run it while no worker holds that path, or use a server.
`replay` publishes straight to Kafka (aiokafka, acks=all) and exits 2 when refused (a live,
unknown or disabled account, or a bad range).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.cli import AppCommand, argument, option

from schemas.common import iso_millis, to_utc
from schemas.ta_signal import TaSignal
from streams.app import app, settings
from streams.cli.accounts import InlineAppCommand
from streams.clickhouse.client import ClickHouse, ClickHouseError, open_clickhouse
from streams.clickhouse.freshness import refresh_freshness
from streams.clickhouse.publish import signal_record
from streams.clickhouse.queries import RangeQuery, symbols_filter
from streams.clickhouse.replay import run_replay
from streams.clickhouse.schema import DEFAULT_TTL_DAYS, init_schema
from streams.domain import secrets
from streams.domain.accounts import AccountConfigError, load_registry
from streams.domain.freshness import FreshnessState
from streams.domain.replay import ReplayRefused, ReplayScope, check_replay_accounts
from streams.kafka_security import aiokafka_kwargs
from streams.ownership import bootstrap_servers
from streams.settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_REFUSED = 2


def _open(settings: Settings) -> ClickHouse:
    return open_clickhouse(settings.clickhouse_dsn.get_secret_value())


async def _init_schema(cmd: AppCommand, ch: ClickHouse, ttl_days: int) -> int:
    for table in await init_schema(ch, ttl_days or None):
        cmd.say(f"{table}\tready")
    return EXIT_OK


async def _freshness(cmd: AppCommand, ch: ClickHouse, settings: Settings) -> int:
    state = FreshnessState()
    state.configure(
        enabled=True,
        slo_seconds=settings.ta_freshness_slo_seconds,
        block_orders=settings.ta_freshness_block_orders,
    )
    await refresh_freshness(ch, state, datetime.now(UTC))
    snapshot = state.snapshot()
    cmd.say(json.dumps(snapshot, indent=2, sort_keys=True))
    return EXIT_ERROR if state.error or snapshot["stale"] else EXIT_OK


@app.command(
    argument("action", type=str),
    option("--ttl-days", type=int, default=DEFAULT_TTL_DAYS, help="TTL on event time; 0 = none."),
    base=InlineAppCommand,
)
async def clickhouse(self: AppCommand, action: str, ttl_days: int) -> int:
    """`init-schema`: create ta_signals/ta_microbars. `freshness`: newest TA per class vs SLO."""
    if action not in ("init-schema", "freshness"):
        self.say(f"unknown action {action!r}: init-schema | freshness", file=self.stderr)
        return EXIT_REFUSED
    ch = _open(settings)
    self.say(f"clickhouse: {ch.target.describe()}", file=self.stderr)
    try:
        if action == "init-schema":
            return await _init_schema(self, ch, ttl_days)
        return await _freshness(self, ch, settings)
    except ClickHouseError as exc:
        self.say(f"error: {exc}", file=self.stderr)
        return EXIT_ERROR
    finally:
        await ch.close()


def parse_ts(text: str) -> datetime:
    """ISO-8601 (a trailing Z allowed); a naive time is UTC."""
    return to_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


class KafkaPublisher:
    """Publish signals onto a topic with aiokafka (key symbol), waiting for every ack."""

    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(
        self, signals: list[TaSignal] | Any, headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        pending = []
        for sig in signals:
            key, value = signal_record(sig)
            pending.append(await self.producer.send(self.topic, value, key=key, headers=headers))
        for fut in pending:
            await fut


def _replay_plan(
    settings: Settings, start: str, end: str, symbols: str, accounts: str
) -> tuple[RangeQuery, ReplayScope]:
    """The range and target accounts; ReplayRefused/ValueError/AccountConfigError when not."""
    query = RangeQuery(parse_ts(start), parse_ts(end), symbols_filter(symbols))
    if query.end <= query.start:
        raise ValueError("--to must be after --from")
    registry = load_registry(settings, strict=False)
    requested = [a.strip() for a in accounts.split(",") if a.strip()]
    targets = check_replay_accounts(requested, registry.accounts)
    return query, ReplayScope(f"replay-{uuid.uuid4().hex[:12]}", targets)


@app.command(
    option("--from", "start", required=True, help="Start of the range (ISO-8601, inclusive)."),
    option("--to", "end", required=True, help="End of the range (ISO-8601, exclusive)."),
    option("--symbols", default="", help="Comma-separated symbols; empty = all."),
    option("--accounts", default="", help="Comma-separated paper accounts; empty = all paper."),
    option("--page-size", type=int, default=None, help="Rows per ClickHouse page."),
    base=InlineAppCommand,
)
async def replay(
    self: AppCommand, start: str, end: str, symbols: str, accounts: str, page_size: int | None
) -> int:
    """Publish ta_signals history into the pipeline for paper accounts only (deterministic)."""
    try:
        query, scope = _replay_plan(settings, start, end, symbols, accounts)
    except (ReplayRefused, ValueError, AccountConfigError) as exc:
        self.say(f"replay refused: {secrets.scrub(str(exc))}", file=self.stderr)
        return EXIT_REFUSED
    ch = _open(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers),
        acks="all",
        linger_ms=5,
        **aiokafka_kwargs(settings),
    )
    await producer.start()
    try:
        result = await run_replay(
            ch,
            KafkaPublisher(producer, settings.signals_topic),
            query,
            scope,
            page_size=page_size or settings.clickhouse_batch_size,
        )
    except ClickHouseError as exc:
        self.say(f"error: {exc}", file=self.stderr)
        return EXIT_ERROR
    finally:
        await producer.stop()
        await ch.close()
    summary = {
        "replay_id": scope.replay_id,
        "accounts": list(scope.accounts),
        "from": iso_millis(query.start),
        "to": iso_millis(query.end),
        "symbols": list(query.symbols),
        "published": result.published,
        "invalid": result.invalid,
        "digest": result.digest,
    }
    self.say(json.dumps(summary, sort_keys=True))
    return EXIT_OK
