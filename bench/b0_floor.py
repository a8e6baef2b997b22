"""B0, the raw I/O floor of an order, measured in the same run as B3 (goal G2 is B3 over B0).

The same load as B3 — the same signal source (seed), rates and duration, one intent fanned out
to the K accounts at once — but the decisions are made in the load generator (the pure domain
core, as B3's expected orders) and produced straight to a decisions topic (key = account). A
plain process (bench/io_floor.py: aiokafka, aiohttp, no framework, no state) then does only the
I/O an order needs: consume its decision, one acknowledged Kafka write, the POST to a simulator
like B3's, one acknowledged write of the outcome. Latency as B3's: the order's signal event time
(the decision's `event_ts`, kept to the millisecond) to the moment the POST answered.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.b3_end_to_end import Order
from bench.context import Context
from bench.goals import ack_p99_metric
from bench.report import BenchResult, latency_summary, rate_per_second
from bench.signals import SignalSource, universe
from bench.support import (
    BenchProcess,
    accounts_json,
    ensure_topics,
    labels,
    producer,
    read_topic,
    start_simulator,
    topic_size,
    worker_env,
)
from schemas.codecs import decode_ta_signal, encode_decision
from streams.domain.fanout import fan_out
from streams.domain.strategy.catalog import build_runtime
from streams.domain.strategy.runtime import StrategyRuntime
from streams.settings import Settings
from tests.support.stack import StackInfo, unique

WARMUP_SEED, LOAD_SEED = 3, 11  # B3's


async def fixed_rate_decisions(
    stack: StackInfo,
    topic: str,
    source: SignalSource,
    runtime: StrategyRuntime,
    accounts: Sequence[str],
    rate: float,
    seconds: float,
) -> tuple[dict[Order, float], int, float]:
    """`rate` signals/s for `seconds` (B3's pacing); each triggering signal's decisions for all
    accounts produced at once. Returns the orders (→ event time, epoch s), signals, send rate."""
    prod = producer(stack, linger_ms=0)
    await prod.start()
    orders: dict[Order, float] = {}
    pending: list[asyncio.Future[Any]] = []
    signals = 0
    try:
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            while signals < int(elapsed * rate):
                _, value = source.next(datetime.now(UTC))
                signals += 1
                signal = decode_ta_signal(value)
                intents = runtime.evaluate(signal).intents
                for d in fan_out(intents, accounts, signal, datetime.now(UTC)):
                    key = d.account_label.encode()
                    pending.append(await prod.send(topic, encode_decision(d), key=key))
                    orders[(d.account_label, d.decision_hash)] = d.event_ts.timestamp()
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending = []
            await asyncio.sleep(0.002)
        await asyncio.gather(*pending)
        achieved = signals / (time.monotonic() - start)
    finally:
        await prod.stop()
    return orders, signals, achieved


def outcomes(records: Sequence[tuple[bytes | None, bytes | None]]) -> dict[Order, dict[str, Any]]:
    """The floor's outcome records (JSON with `acked_at`) by order; journal records skipped."""
    out: dict[Order, dict[str, Any]] = {}
    for _, value in records:
        if not value:
            continue
        body = json.loads(value)
        if "acked_at" in body:
            out.setdefault((body["account"], body["client_order_id"]), body)
    return out


def order_latencies(
    orders: Mapping[Order, float], done: Mapping[Order, Mapping[str, Any]], now: float
) -> tuple[list[float], dict[str, list[float]], int]:
    """Per order, ms from signal event time to the POST's answer (an order without an answered
    POST counts with its age so far: a lower bound, never flattering); the steps in ms; and how
    many were not acknowledged (no outcome, or a POST that failed)."""
    ack_ms: list[float] = []
    steps: dict[str, list[float]] = {"queued": [], "durable write": [], "broker POST": []}
    unacked = 0
    for order, event_ts in orders.items():
        body = done.get(order)
        if body is None or not 200 <= int(body["status"]) < 300:
            unacked += 1
            ack_ms.append(1000.0 * (now - event_ts))
            continue
        ack_ms.append(1000.0 * (body["acked_at"] - event_ts))
        steps["queued"].append(1000.0 * (body["received_at"] - event_ts))
        steps["durable write"].append(1000.0 * (body["journaled_at"] - body["received_at"]))
        steps["broker POST"].append(1000.0 * (body["acked_at"] - body["journaled_at"]))
    return ack_ms, steps, unacked


async def wait_records(stack: StackInfo, topic: str, total: int, timeout: float) -> float:
    """Seconds until `topic` holds `total` records (or `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await topic_size(stack, topic) >= total:
            break
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def run(ctx: Context, result: BenchResult) -> None:
    profile, stack = ctx.profile, ctx.stack
    accounts = labels(profile.accounts)
    symbols = universe(profile.symbols)
    prefix = ctx.track(unique("b0"))
    decisions, ledger = f"{prefix}.decisions", f"{prefix}.ledger"
    await ensure_topics(stack, [decisions, ledger])
    with start_simulator(accounts, symbols) as sim:
        env = worker_env("b0", "postgresql://unused", accounts_json(sim.url, accounts))
        runtime = build_runtime(Settings(**env))  # type: ignore[arg-type]
        cmd = [sys.executable, "-m", "bench.io_floor", "--bootstrap", stack.bootstrap]
        cmd += ["--decisions", decisions, "--ledger", ledger, "--group", prefix, "--sim", sim.url]
        floor_env = {"TRADING_ACCOUNTS_JSON": env["TRADING_ACCOUNTS_JSON"]}
        floor = BenchProcess("b0-floor", cmd, floor_env, ctx.workdir)
        try:
            await load(ctx, result, floor, decisions, ledger, runtime, accounts, symbols)
        finally:
            floor.stop()
    result.details.update(
        {
            "accounts": profile.accounts,
            "intent_fraction": profile.intent_fraction,
            "load_seconds": profile.load_seconds,
            "latency_source": "floor outcome acked_at (POST answered) - decision event_ts",
        }
    )


async def load(
    ctx: Context,
    result: BenchResult,
    floor: BenchProcess,
    decisions: str,
    ledger: str,
    runtime: StrategyRuntime,
    accounts: Sequence[str],
    symbols: Sequence[str],
) -> None:
    profile, stack = ctx.profile, ctx.stack
    written = 0  # records in the ledger topic: two per order (journal, outcome)
    warm = SignalSource(symbols, 1.0, seed=WARMUP_SEED)
    orders, _, _ = await fixed_rate_decisions(stack, decisions, warm, runtime, accounts, 20, 0.25)
    written += 2 * len(orders)
    await wait_records(stack, ledger, written, 120)
    if await topic_size(stack, ledger) < written:
        raise RuntimeError(f"warm-up: the floor did not answer\n{floor.tail()}")
    source = SignalSource(symbols, profile.intent_fraction, seed=LOAD_SEED)
    b0_p99: dict[int, float | None] = {}
    for rate in profile.rates:
        orders, signals, achieved = await fixed_rate_decisions(
            stack, decisions, source, runtime, accounts, rate, profile.load_seconds
        )
        written += 2 * len(orders)
        drain = await wait_records(stack, ledger, written, profile.drain_seconds)
        records = await read_topic(stack, ledger, expect=written, timeout=120)
        done = outcomes([(r.key, r.value) for r in records])
        ack_ms, steps, unacked = order_latencies(orders, done, time.time())
        summary = latency_summary(ack_ms)
        bound = " (lower bound)" if unacked else ""
        result.add(f"p50 signal→ack @{rate}/s", summary["p50_ms"], "ms" + bound)
        result.add(f"p95 signal→ack @{rate}/s", summary["p95_ms"], "ms" + bound)
        result.add(ack_p99_metric(rate), summary["p99_ms"], "ms" + bound)
        acks = [1000.0 * done[o]["acked_at"] for o in orders if o in done]
        result.add(f"orders/s @{rate}/s", rate_per_second(acks), "orders/s")
        if unacked:
            result.add(f"unacknowledged @{rate}/s", unacked)
        p99 = summary["p99_ms"]
        b0_p99[rate] = None if unacked or p99 is None else float(p99)
        result.details[f"rate_{rate}"] = {
            "signals_sent": signals,
            "send_rate": achieved,
            "orders_expected": len(orders),
            "acknowledged": len(orders) - unacked,
            "drain_seconds_after_load": drain,
            "signal_to_ack": summary,
            "steps_ms": {step: latency_summary(values) for step, values in steps.items()},
        }
    ctx.shared["b0_p99_ms"] = b0_p99
