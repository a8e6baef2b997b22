"""Persistence benchmark: batched order-event append and decision upsert against a raw COPY of
the same rows into the same table, in the same run.

    .venv/bin/python -m bench.persistence_bench [--rows 20000] [--batch 500] [--rounds 3]

Needs DATABASE_URL (or the local stack's .cache/stack/env). Works in a throwaway database that
it creates, migrates to head and drops. Prints rows/s per method and the ratio to COPY.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import astuple, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from streams.persistence import migrate
from streams.persistence.repository import DecisionRow, OrderEventRow, Repository, dumps

ENV_FILE = Path(__file__).resolve().parents[1] / ".cache" / "stack" / "env"
T0 = datetime(2026, 2, 23, 14, 30, tzinfo=UTC)


@dataclass(frozen=True)
class Result:
    name: str
    rows: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def database_url() -> str:
    if "DATABASE_URL" in os.environ:
        return os.environ["DATABASE_URL"]
    if ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            if key == "DATABASE_URL":
                return value
    sys.exit("DATABASE_URL is not set and the local stack is not up (make stack-up)")


def events(n: int) -> list[OrderEventRow]:
    return [
        OrderEventRow(
            event_fingerprint=f"{i:064x}",
            account_label=("paper", "live")[i % 2],
            source_topic="torghut.trade-updates.v2",
            source_partition=i % 8,
            source_offset=i,
            event_ts=T0 + timedelta(milliseconds=i),
            alpaca_order_id=f"ord-{i // 3}",
            client_order_id=f"{i // 3:064x}",
            symbol="AAPL",
            event_type="partial_fill",
            status="partially_filled",
            execution_id_alpaca=f"fill-{i}",
            qty=Decimal(1),
            price=Decimal("201.37"),
            filled_qty=Decimal(i % 3 + 1),
            filled_avg_price=Decimal("201.37"),
            raw={"event": "partial_fill", "order": {"id": f"ord-{i // 3}", "qty": "3"}},
        )
        for i in range(n)
    ]


def decisions(n: int) -> list[DecisionRow]:
    return [
        DecisionRow(
            account_label=("paper", "live")[i % 2],
            decision_hash=f"{i:064x}",
            strategy_id="macd-rsi",
            symbol="AAPL",
            timeframe="1Sec",
            action="buy",
            event_ts=T0 + timedelta(seconds=i),
            qty=Decimal(3),
            notional=Decimal("600.50"),
            price=Decimal("200.1667"),
            confidence=0.8,
            decision_json={"notional": "600.50", "sources": ["macd-rsi"]},
        )
        for i in range(n)
    ]


EVENT_FIELDS = (
    "event_fingerprint",
    "account_label",
    "source_topic",
    "source_partition",
    "source_offset",
    "event_ts",
    "alpaca_order_id",
    "client_order_id",
    "symbol",
    "event_type",
    "status",
    "execution_id_alpaca",
    "qty",
    "price",
    "filled_qty",
    "filled_avg_price",
    "raw",
)
EVENT_COLUMNS = ("event_fingerprint", "alpaca_account_label", *EVENT_FIELDS[2:])
DECISION_COLUMNS = (
    "alpaca_account_label",
    "decision_hash",
    "strategy_id",
    "symbol",
    "timeframe",
    "action",
    "event_ts",
    "status",
    "qty",
    "notional",
    "price",
    "confidence",
    "rejection_reasons",
    "decision_json",
)


def event_records(rows: Sequence[OrderEventRow]) -> list[tuple[Any, ...]]:
    return [(*(getattr(r, f) for f in EVENT_FIELDS[:-1]), dumps(r.raw)) for r in rows]


def decision_records(rows: Sequence[DecisionRow]) -> list[tuple[Any, ...]]:
    return [
        (*astuple(r)[:12], dumps(list(r.rejection_reasons)), dumps(r.decision_json)) for r in rows
    ]


def batches(rows: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


async def timed(name: str, rows: int, work: Callable[[], Awaitable[None]]) -> Result:
    start = time.perf_counter()
    await work()
    return Result(name, rows, time.perf_counter() - start)


async def truncate(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"TRUNCATE {table} RESTART IDENTITY CASCADE")


async def copy_rows(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], records: list[Any]
) -> None:
    """The floor: raw binary COPY of the same rows, batch by batch (jsonb as text)."""
    for chunk in records:
        await conn.copy_records_to_table(table, records=chunk, columns=list(columns))


async def run_round(conn: asyncpg.Connection, repo: Repository, n: int, batch: int) -> list[Result]:
    """COPY floor, then the repository path, for events and for decisions (fresh tables each)."""
    ev, dec = events(n), decisions(n)
    ev_batches, dec_batches = batches(ev, batch), batches(dec, batch)
    ev_records = batches(event_records(ev), batch)
    dec_records = batches(decision_records(dec), batch)

    async def append() -> None:
        for chunk in ev_batches:
            await repo.append_order_events(chunk)

    async def upsert() -> None:
        for chunk in dec_batches:
            await repo.upsert_decisions(chunk)

    results = []
    await truncate(conn, "execution_order_events")
    results.append(
        await timed(
            "events: COPY",
            n,
            lambda: copy_rows(conn, "execution_order_events", EVENT_COLUMNS, ev_records),
        )
    )
    await truncate(conn, "execution_order_events")
    results.append(await timed("events: append_order_events (new)", n, append))
    results.append(await timed("events: append_order_events (all duplicates)", n, append))

    await truncate(conn, "trade_decisions")
    results.append(
        await timed(
            "decisions: COPY",
            n,
            lambda: copy_rows(conn, "trade_decisions", DECISION_COLUMNS, dec_records),
        )
    )
    await truncate(conn, "trade_decisions")
    results.append(await timed("decisions: upsert_decisions (new)", n, upsert))
    results.append(await timed("decisions: upsert_decisions (replay)", n, upsert))
    return results


async def main(rows: int, batch: int, rounds: int) -> None:
    base = database_url()
    name = f"bench_{uuid.uuid4().hex[:10]}"
    admin_dsn = re.sub(r"/[^/]*$", "/postgres", base)
    dsn = re.sub(r"/[^/]*$", f"/{name}", base)
    admin = await asyncpg.connect(admin_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        await migrate.upgrade(dsn, "head", default_account_label="paper")
        repo = await Repository.connect(dsn, pool_size=2)
        conn = await asyncpg.connect(dsn)
        try:
            all_rounds = [await run_round(conn, repo, rows, batch) for _ in range(rounds)]
        finally:
            await conn.close()
            await repo.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    report(all_rounds, rows, batch)


def report(all_rounds: list[list[Result]], rows: int, batch: int) -> None:
    print(f"rows={rows} batch={batch} rounds={len(all_rounds)} (median rows/s per method)")
    medians: dict[str, float] = {}
    for i, first in enumerate(all_rounds[0]):
        medians[first.name] = statistics.median(r[i].rate for r in all_rounds)
    for label, value in medians.items():
        floor = medians["events: COPY" if label.startswith("events") else "decisions: COPY"]
        print(f"  {label:<46} {value:>10,.0f} rows/s   {value / floor:5.2f}x of COPY")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.batch, args.rounds))
