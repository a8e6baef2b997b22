"""B4, account scaling: lanes throughput and worker memory with K = 1, 10, 100 accounts.

For each K a fresh worker trades K simulator accounts. After start-up the idle worker's RSS is
read (K lanes built, nothing to do); each lane then takes one warm-up decision (its first order
fetches the account snapshot), and a backlog of D decisions, spread evenly over the K accounts,
is put on the decisions topic. Throughput = broker-acknowledged orders per second, first to last,
from the ledger changelog's `submitted_at` (the lane's clock at the broker's answer). The same
D for every K, so the figure is per decision: K=100 vs K=1 shows what many lanes cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from bench.b3_end_to_end import ledger_view, wait_executions
from bench.context import Context
from bench.goals import B4_RATIO
from bench.report import BenchResult, rate_per_second, ratio
from bench.signals import price_of, universe
from bench.support import (
    BenchWorker,
    accounts_json,
    cpu_seconds,
    labels,
    peak_rss_mib,
    prepare_app_topics,
    produce_many,
    rss_mib,
    start_simulator,
    worker_env,
)
from schemas.codecs import encode_decision
from schemas.decision import AccountDecision, Action
from simulator.testing import SimulatorProcess
from streams.domain.hashing import decision_hash

SYMBOLS = 50
IDLE_SETTLE_SECONDS = 3.0
STRATEGY = "bench-scaling"


def decisions(accounts: Sequence[str], count: int, symbols: Sequence[str]) -> list[AccountDecision]:
    """`count` buy decisions round-robin over the accounts, each with its own event time."""
    start = datetime.now(UTC)
    out = []
    for i in range(count):
        account, symbol = accounts[i % len(accounts)], symbols[i % len(symbols)]
        event_ts = start + timedelta(milliseconds=i)
        identity = {
            "account_label": account,
            "symbol": symbol,
            "timeframe": "1Sec",
            "event_ts": event_ts,
            "action": "buy",
        }
        out.append(
            AccountDecision(
                decision_hash=decision_hash(**identity),  # type: ignore[arg-type]
                strategy_id=STRATEGY,
                symbol=symbol,
                timeframe="1Sec",
                account_label=account,
                event_ts=event_ts,
                action=Action.buy,
                notional=Decimal(1000),
                confidence=0.9,
                price=Decimal(str(price_of(symbol))),
                emitted_at=datetime.now(UTC),
            )
        )
    return out


async def one_k(
    ctx: Context, sim: SimulatorProcess, k: int, symbols: Sequence[str]
) -> dict[str, float | int | None]:
    stack, d = ctx.stack, ctx.profile.scaling_decisions
    accounts = labels(k)
    dsn = await ctx.databases.fresh()
    env = worker_env(f"b4k{k}", dsn, accounts_json(sim.url, accounts))
    app_id = ctx.track(env["TORGHUT_APP_ID"])
    await prepare_app_topics(stack, env)
    worker = BenchWorker(stack, env, ctx.data_dir(f"b4-{k}"), f"b4-k{k}").start()
    topic = env["TORGHUT_DECISIONS_TOPIC"]

    async def send(batch: list[AccountDecision]) -> None:
        records = [(x.account_label.encode(), encode_decision(x)) for x in batch]
        await produce_many(stack, topic, records)

    try:
        ready = worker.wait_readyz(180)
        worker.wait_for_log("control topic replayed", 60)
        await asyncio.sleep(IDLE_SETTLE_SECONDS)
        idle = rss_mib(worker.pid)
        warm = decisions(accounts, k, symbols)
        await send(warm)
        done, warm_seconds = await wait_executions(dsn, k, ctx.profile.drain_seconds)
        if done < k:
            raise RuntimeError(f"K={k}: warm-up {done} of {k} executions\n{worker.tail(30)}")
        load = decisions(accounts, d, symbols)
        cpu_before = cpu_seconds(worker.pid)
        await send(load)
        done, drain = await wait_executions(dsn, k + d, ctx.profile.drain_seconds)
        cpu = cpu_seconds(worker.pid) - cpu_before
        loaded, peak = rss_mib(worker.pid), peak_rss_mib(worker.pid)
    finally:
        worker.stop()
    view = await ledger_view(stack, app_id)
    ours = {(x.account_label, x.decision_hash) for x in load}
    rate = rate_per_second(1000.0 * at for key, (_, at) in view.acks.items() if key in ours)
    if done < k + d:
        raise RuntimeError(f"K={k}: {done - k} of {d} decisions executed in {drain:.0f}s")
    return {
        "accounts": k,
        "decisions": d,
        "orders_per_second": rate,
        "worker_cpu_ms_per_order": 1000.0 * cpu / d,
        "seconds_to_ready": ready,
        "warm_up_seconds": warm_seconds,
        "rss_idle_mib": idle,
        "rss_after_load_mib": loaded,
        "rss_peak_mib": peak,
        "lane_steps_ms": view.breakdown(ours),  # type: ignore[dict-item]
    }


async def run(ctx: Context, result: BenchResult) -> None:
    symbols = universe(SYMBOLS)
    ks = ctx.profile.scaling_accounts
    runs: dict[int, dict[str, float | int | None]] = {}
    with start_simulator(labels(max(ks)), symbols) as sim:
        for k in ks:
            runs[k] = await one_k(ctx, sim, k, symbols)
            result.add(f"orders/s K={k}", runs[k]["orders_per_second"], "orders/s")
            result.add(f"worker CPU per order K={k}", runs[k]["worker_cpu_ms_per_order"], "ms")
            result.add(f"RSS idle K={k}", runs[k]["rss_idle_mib"], "MiB")
            result.add(f"RSS after load K={k}", runs[k]["rss_after_load_mib"], "MiB")
    result.details["runs"] = {str(k): v for k, v in runs.items()}
    low, high = min(ks), max(ks)
    result.add(
        B4_RATIO, ratio(_f(runs[high]["orders_per_second"]), _f(runs[low]["orders_per_second"]))
    )
    idle_low, idle_high = _f(runs[low]["rss_idle_mib"]), _f(runs[high]["rss_idle_mib"])
    if idle_low is not None and idle_high is not None and high > low:
        result.add("memory per idle lane", 1024 * (idle_high - idle_low) / (high - low), "KiB")


def _f(value: float | int | None) -> float | None:
    return None if value is None else float(value)
