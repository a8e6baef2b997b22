"""B3, end to end: fixed-rate signals → decisions → lanes → simulator orders → Postgres executions.

A real worker (signals + lanes agents, production settings except the request budgets) trades
K accounts on the simulator. Signals are produced at a fixed rate with their event time set to
the producer's wall clock at send time; `intent_fraction` of them make the strategy emit an
intent, each fanned out to the K accounts (so orders/s = rate * fraction * K).

Latency sources (all per order, no histogram interpolation):
- signal → broker ack: the lane's ledger entry in state `submitted` carries `submitted_at`, the
  lane's clock right after the broker answered the POST; read from the ledger changelog topic.
  Minus the decision's `event_ts` (= the signal's event time, kept to the millisecond by Avro,
  so the figure is at most 1 ms pessimistic).
- signal → execution persisted: `executions.created_at` (Postgres `now()` at the insert).
The lane's `torghut_signal_to_broker_ack_seconds` histogram is reported next to it as a check.

Zero lost, zero duplicates: the expected (account, client_order_id) set comes from the pure
domain core run over the signals actually sent; the simulator's orders and the executions rows
must be exactly that set, each once.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.context import Context
from bench.goals import ack_p99_metric, floor_ratio_metric, keep_up_metric
from bench.ledger_view import LedgerView, read_ledger
from bench.report import BenchResult, latency_summary, rate_per_second, ratio
from bench.signals import SignalSource, universe
from bench.support import (
    BenchWorker,
    accounts_json,
    labels,
    prepare_app_topics,
    producer,
    read_topic,
    rss_mib,
    start_simulator,
    worker_env,
)
from schemas.codecs import decode_ta_signal
from simulator.testing import SimulatorProcess
from streams.domain.fanout import fan_out
from streams.domain.strategy.catalog import build_runtime
from streams.settings import Settings
from tests.support.pg import fetch
from tests.support.stack import StackInfo

Order = tuple[str, str]  # (account, client_order_id = decision hash)
WARMUP_INTENTS = 3


async def fixed_rate(
    stack: StackInfo, topic: str, source: SignalSource, rate: float, seconds: float
) -> tuple[list[bytes], float]:
    """Send `rate` signals/s for `seconds`; event time = wall clock at send. Returns the values
    sent and the achieved send rate."""
    prod = producer(stack, linger_ms=0)
    await prod.start()
    sent: list[bytes] = []
    pending: list[asyncio.Future[Any]] = []
    try:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            while len(sent) < int(elapsed * rate):
                key, value = source.next(datetime.now(UTC))
                pending.append(await prod.send(topic, value, key=key))
                sent.append(value)
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        achieved = len(sent) / (time.monotonic() - start)
    finally:
        await prod.stop()
    return sent, achieved


def expected_orders(
    env: Mapping[str, str], accounts: Sequence[str], sent: list[bytes]
) -> dict[Order, datetime]:
    """What the pure domain core decides for these signals: one order per (intent, account),
    with its signal event time."""
    runtime = build_runtime(Settings(**env))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    out: dict[Order, datetime] = {}
    for value in sent:
        signal = decode_ta_signal(value)
        intents = runtime.evaluate(signal).intents
        for d in fan_out(intents, accounts, signal, now):
            out[(d.account_label, d.decision_hash)] = d.event_ts
    return out


async def executed(dsn: str) -> dict[Order, float]:
    """(account, client order id) → seconds from signal event time to the execution row."""
    rows = await fetch(
        dsn,
        "SELECT e.alpaca_account_label AS account, e.client_order_id AS coid, "
        "EXTRACT(EPOCH FROM (e.created_at - d.event_ts)) AS seconds "
        "FROM executions e JOIN trade_decisions d "
        "ON d.alpaca_account_label = e.alpaca_account_label "
        "AND d.decision_hash = e.client_order_id",
    )
    return {(r["account"], r["coid"]): float(r["seconds"]) for r in rows}


async def execution_count(dsn: str) -> int:
    return int((await fetch(dsn, "SELECT count(*) AS n FROM executions"))[0]["n"])


async def wait_executions(dsn: str, total: int, timeout: float) -> tuple[int, float]:
    """Poll until `total` executions exist; (count, seconds waited)."""
    started = time.monotonic()
    count = await execution_count(dsn)
    while count < total and time.monotonic() - started < timeout:
        await asyncio.sleep(0.25)
        count = await execution_count(dsn)
    return count, time.monotonic() - started


async def ledger_view(stack: StackInfo, app_id: str) -> LedgerView:
    """The ledger changelog, read whole: per order its broker ack and its lane steps."""
    records = await read_topic(stack, f"{app_id}-lane-ledger-changelog", expect=None, timeout=120)
    return read_ledger((r.key, r.value, r.timestamp_ms) for r in records)


def simulator_orders(sim: SimulatorProcess, accounts: Sequence[str]) -> Counter[Order]:
    return Counter(
        (label, order["client_order_id"]) for label in accounts for order in sim.admin.orders(label)
    )


def histogram_share_within(worker: BenchWorker, seconds: float) -> float | None:
    """Share of the lane histogram's observations at or under `seconds` (all accounts)."""
    within = total = 0.0
    for name, labels_, value in worker.metrics().get("torghut_signal_to_broker_ack_seconds", []):
        if not name.endswith("_bucket"):
            continue
        if labels_["le"] == "+Inf":
            total += value
        elif abs(float(labels_["le"]) - seconds) < 1e-9:
            within += value
    return within / total if total else None


async def run(ctx: Context, result: BenchResult) -> None:
    profile, stack = ctx.profile, ctx.stack
    accounts = labels(profile.accounts)
    symbols = universe(profile.symbols)
    dsn = await ctx.databases.fresh()
    with start_simulator(accounts, symbols) as sim:
        env = worker_env("b3", dsn, accounts_json(sim.url, accounts))
        app_id = ctx.track(env["TORGHUT_APP_ID"])
        await prepare_app_topics(stack, env)
        worker = BenchWorker(stack, env, ctx.data_dir("b3"), "b3").start()
        try:
            worker.wait_readyz(180)
            worker.wait_for_log("control topic replayed", 60)
            expected = await warm_up(ctx, env, worker, dsn, accounts, symbols)
            source = SignalSource(symbols, profile.intent_fraction, seed=11)
            for rate in profile.rates:
                expected |= await one_rate(ctx, result, env, dsn, accounts, source, rate)
            result.details["histogram_share_within_25ms"] = histogram_share_within(worker, 0.025)
            result.details["worker_rss_mib"] = rss_mib(worker.pid)
            await verify(ctx, result, sim, dsn, expected)
        finally:
            worker.stop()
    result.details.update(
        {
            "accounts": profile.accounts,
            "intent_fraction": profile.intent_fraction,
            "load_seconds": profile.load_seconds,
            "latency_source": "ledger changelog submitted_at - decision event_ts; "
            "executions.created_at - event_ts",
            "app_id": app_id,
        }
    )


async def warm_up(
    ctx: Context,
    env: Mapping[str, str],
    worker: BenchWorker,
    dsn: str,
    accounts: Sequence[str],
    symbols: Sequence[str],
) -> dict[Order, datetime]:
    """A few intents first: each lane's first order fetches its account snapshot (cold start)."""
    source = SignalSource(symbols, 1.0, seed=3)
    sent, _ = await fixed_rate(ctx.stack, env["TORGHUT_SIGNALS_TOPIC"], source, 20, 0.25)
    expected = expected_orders(env, accounts, sent)
    count, _ = await wait_executions(dsn, len(expected), 120)
    if count < len(expected):
        raise RuntimeError(f"warm-up: {count} of {len(expected)} executions\n{worker.tail(30)}")
    return expected


async def one_rate(
    ctx: Context,
    result: BenchResult,
    env: Mapping[str, str],
    dsn: str,
    accounts: Sequence[str],
    source: SignalSource,
    rate: int,
) -> dict[Order, datetime]:
    """One fixed-rate load and its latencies; returns the orders it should have produced."""
    profile = ctx.profile
    before = await execution_count(dsn)
    sent, achieved = await fixed_rate(
        ctx.stack, env["TORGHUT_SIGNALS_TOPIC"], source, rate, profile.load_seconds
    )
    expected = expected_orders(env, accounts, sent)
    count, drain = await wait_executions(dsn, before + len(expected), profile.drain_seconds)
    view = await ledger_view(ctx.stack, env["TORGHUT_APP_ID"])
    acks = view.acks
    persisted = await executed(dsn)
    now = datetime.now(UTC)
    # An order not acknowledged (persisted) yet counts with its age so far: the percentiles are
    # then lower bounds, never flattered by leaving the slowest orders out.
    ack_ms = [
        1000.0 * (acks[o][0] if o in acks else (now - expected[o]).total_seconds())
        for o in expected
    ]
    persist_ms = [
        1000.0 * (persisted[o] if o in persisted else (now - expected[o]).total_seconds())
        for o in expected
    ]
    unfinished = sum(1 for o in expected if o not in persisted)
    ack_summary, persist_summary = latency_summary(ack_ms), latency_summary(persist_ms)
    orders_rate = rate_per_second(1000.0 * acks[o][1] for o in expected if o in acks)
    bound = " (lower bound)" if unfinished else ""
    result.add(f"p50 signal→ack @{rate}/s", ack_summary["p50_ms"], "ms" + bound)
    result.add(f"p95 signal→ack @{rate}/s", ack_summary["p95_ms"], "ms" + bound)
    result.add(ack_p99_metric(rate), ack_summary["p99_ms"], "ms" + bound)
    result.add(f"p99 signal→persisted @{rate}/s", persist_summary["p99_ms"], "ms" + bound)
    result.add(f"orders/s @{rate}/s", orders_rate, "orders/s")
    result.add(f"orders @{rate}/s", len(expected))
    # Against the raw I/O floor measured in the same run (B0), and whether the acks kept up
    # with the orders offered (a backlog that grows shows as an ack rate below the offer).
    floor_p99 = ctx.shared.get("b0_p99_ms", {}).get(rate)
    result.add(floor_ratio_metric(rate), ratio(ack_summary["p99_ms"], floor_p99), bound.strip())
    offered = achieved * len(expected) / len(sent) if sent else None
    result.add(keep_up_metric(rate), ratio(orders_rate, offered))
    if unfinished:
        result.add(f"unfinished after {profile.drain_seconds:.0f}s @{rate}/s", unfinished)
    result.details[f"rate_{rate}"] = {
        "signals_sent": len(sent),
        "send_rate": achieved,
        "intents": len(expected) // max(1, len(accounts)),
        "orders_expected": len(expected),
        "acknowledged": sum(1 for o in expected if o in acks),
        "executions": count - before,
        "unfinished_after_drain": unfinished,
        "drain_seconds_after_load": drain,
        "signal_to_ack": ack_summary,
        "b0_p99_ms": floor_p99,
        "offered_orders_per_s": offered,
        "signal_to_persisted": persist_summary,
        "lane_steps_ms": view.breakdown(expected),
    }
    return expected


async def verify(
    ctx: Context,
    result: BenchResult,
    sim: SimulatorProcess,
    dsn: str,
    orders: Mapping[Order, datetime],
) -> None:
    """After the last load: every expected order exactly once at the broker and in Postgres."""
    expected = set(orders)
    accounts = sorted({account for account, _ in expected})
    await wait_executions(dsn, len(expected), ctx.profile.drain_seconds)
    persisted = await executed(dsn)
    at_broker = simulator_orders(sim, accounts)
    missing_broker = expected - set(at_broker)
    missing_db = expected - set(persisted)
    unexpected = (set(at_broker) | set(persisted)) - expected
    duplicates = sum(n - 1 for n in at_broker.values() if n > 1)
    result.add("orders checked", len(expected))
    result.add("lost", len(missing_broker | missing_db))
    result.add("duplicates", duplicates)
    result.details["verification"] = {
        "expected": len(expected),
        "at_simulator": len(set(at_broker) & expected),
        "executions": len(set(persisted) & expected),
        "missing_at_simulator": len(missing_broker),
        "missing_in_postgres": len(missing_db),
        "unexpected": len(unexpected),
        "duplicates_at_simulator": duplicates,
    }
    if missing_broker or missing_db or duplicates or unexpected:
        raise RuntimeError(
            f"orders: {len(missing_broker)} missing at the simulator, {len(missing_db)} missing "
            f"in Postgres, {duplicates} duplicates, {len(unexpected)} unexpected"
        )
