"""The project's performance goals (2-core machine), judged from a run's results."""

from __future__ import annotations

from collections.abc import Sequence

from bench.context import Profile
from bench.report import BenchResult, Goal

GOAL_RATE = 500  # signals/s of the latency goal
GOAL_ACCOUNTS = 10
GOAL_KEYS = 1_000_000

# Metric names shared with the benchmarks that produce them.
B2_RATIO = "B2/B1"
B4_RATIO = "K100/K1 per-decision"
B5_READY = "restart → ready"
B5_PROJECTED = "restart → ready, 1M keys (projected)"


def ack_p99_metric(rate: int) -> str:
    return f"p99 signal→ack @{rate}/s"


def _value(results: Sequence[BenchResult], key: str, metric: str) -> float | None:
    for result in results:
        if result.key == key:
            return result.value(metric)
    return None


def goals(profile: Profile, results: Sequence[BenchResult]) -> list[Goal]:
    latency_target = f"p99 signal→broker ack <= 25 ms at {GOAL_RATE}/s, {GOAL_ACCOUNTS} accounts"
    latency = (
        _value(results, "B3", ack_p99_metric(GOAL_RATE))
        if profile.accounts == GOAL_ACCOUNTS
        else None
    )
    if profile.ledger_keys >= GOAL_KEYS:
        recovery = _value(results, "B5", B5_READY)
        recovery_target = "B5 restart to ready <= 30 s, 1M keys"
    else:
        recovery = _value(results, "B5", B5_PROJECTED)
        recovery_target = (
            f"B5 restart to ready <= 30 s, 1M keys (projected from {profile.ledger_keys:,} keys "
            "at the measured restore rate)"
        )
    return [
        Goal("G1 pipeline", "B2 >= 0.5 x B1", ">=", 0.5, _value(results, "B2", B2_RATIO)),
        Goal("G2 latency", latency_target, "<=", 25.0, latency, "ms"),
        Goal("G3 scaling", "B4 K=100 >= 0.8 x K=1", ">=", 0.8, _value(results, "B4", B4_RATIO)),
        Goal("G4 recovery", recovery_target, "<=", 30.0, recovery, "s"),
    ]
