"""B2, the signals pipeline: the B1 signals through decode, strategy runtime and fan-out to K lanes.

A real worker drains a backlog of the same N Avro signals (same broker, same partition count as
B1). The lanes are held off so that only the pipeline runs: the control topic is not created,
and a lane takes no decision before it has read the control topic (its kill-switch fail-safe);
the worker's readiness says so too, so start-up is awaited on faust's "Ready" log line.

Rates are read on the consumer side, from the decisions topic: the first and the last signal of
the backlog always trigger, so (N - 1) signals were processed between the first decision of the
first signal and the last decision of the last one (record timestamps, set by the worker's
producer). decisions/s = decisions over the same span.
"""

from __future__ import annotations

import asyncio
import time

from bench.b1_ceiling import T0
from bench.context import Context
from bench.report import BenchResult, ratio
from bench.signals import SignalSource, backlog, universe
from bench.support import (
    BenchWorker,
    Seen,
    accounts_json,
    cpu_seconds,
    labels,
    prepare_app_topics,
    produce_many,
    read_topic,
    rss_mib,
    topic_size,
    worker_env,
)
from schemas.codecs import decode_decision
from tests.support.stack import StackInfo

UNREACHABLE_BROKER = "http://127.0.0.1:9"


async def drain(stack: StackInfo, pid: int, topic: str, n: int, timeout: float) -> float:
    """Wait until the topic has `n` records; the process's CPU seconds from the first to the
    last (polled: the first record is seen within 0.2 s of its arrival)."""
    deadline = time.monotonic() + timeout
    first_cpu = None
    size = 0
    while time.monotonic() < deadline:
        size = await topic_size(stack, topic)
        if size and first_cpu is None:
            first_cpu = cpu_seconds(pid)
        if size >= n:
            return cpu_seconds(pid) - (first_cpu or 0.0)
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{size} of {n} decisions after {timeout:.0f}s")


def span_seconds(records: list[Seen], first: tuple[str, int], last: tuple[str, int]) -> float:
    """From the first decision of signal `first` to the last decision of signal `last`."""
    stamps: dict[tuple[str, int], list[int]] = {}
    for record in records:
        d = decode_decision(record.value, verify_hash=False)
        stamps.setdefault((d.symbol, d.signal_seq or 0), []).append(record.timestamp_ms)
    return (max(stamps[last]) - min(stamps[first])) / 1000.0


async def run(ctx: Context, result: BenchResult) -> None:
    profile, stack = ctx.profile, ctx.stack
    k = profile.accounts
    dsn = await ctx.databases.fresh()
    env = worker_env("b2", dsn, accounts_json(UNREACHABLE_BROKER, labels(k)))
    ctx.track(env["TORGHUT_APP_ID"])
    await prepare_app_topics(stack, env, control=False)
    signals = SignalSource(universe(profile.symbols), profile.intent_fraction)
    records = backlog(signals, profile.signals, T0)
    first = next(records)
    first_signal = signals.last
    n = await produce_many(stack, env["TORGHUT_SIGNALS_TOPIC"], [first, *records])
    last_signal = signals.last
    expected = signals.triggers * k
    topic = env["TORGHUT_DECISIONS_TOPIC"]
    worker = BenchWorker(stack, env, ctx.data_dir("b2"), "b2").start()
    try:
        # /readyz stays 503 without the control topic (lanes gated): faust's own Ready line.
        worker.wait_for_log("[^Worker]: Ready", 180)
        cpu = await drain(stack, worker.pid, topic, expected, timeout=600)
        rss = rss_mib(worker.pid)
    finally:
        worker.stop()
    decisions = await read_topic(stack, topic, expect=expected, timeout=120)
    span = span_seconds(decisions, first_signal, last_signal)
    signal_rate = (n - 1) / span if span else None
    result.add("signals/s", signal_rate, "sig/s")
    result.add("decisions/s", len(decisions) / span if span else None, "dec/s")
    result.add("B2/B1", ratio(signal_rate, ctx.shared.get("b1_rate")))
    result.add("B2/faust agent passthrough", ratio(signal_rate, ctx.shared.get("b1_faust_rate")))
    result.add("cpu per signal", 1e6 * cpu / n, "µs")
    result.add("accounts (K)", k)
    result.details.update(
        {
            "signals": n,
            "intents": signals.triggers,
            "intent_fraction": profile.intent_fraction,
            "decisions": len(decisions),
            "decisions_expected": expected,
            "worker_rss_mib": rss,
            "span_seconds": span,
        }
    )
    if len(decisions) != expected:
        raise RuntimeError(f"{len(decisions)} decisions, expected {expected}")
