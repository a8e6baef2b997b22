"""The project's performance goals (2-core machine), judged from a run's results."""

from __future__ import annotations

from collections.abc import Sequence

from bench.context import Profile
from bench.report import BenchResult, Goal

GOAL_ACCOUNTS = 10
GOAL_KEYS = 1_000_000
# G2: B3's p99 signal→broker ack over the raw I/O floor's (B0) in the same run, per rate.
FLOOR_RATIOS = {500: 2.0, 2000: 4.0}
KEEP_UP_RATE = 2000  # ... with no growing backlog at this rate:
KEEP_UP = 0.95  # acknowledged orders/s >= this share of the orders/s offered
# G1: the worker's signals per CPU second over its peers' (B6, same run).
G1_QUIX = 1.0
G1_AIOKAFKA = 0.5  # stretch

# Metric names shared with the benchmarks that produce them.
B2_RATIO = "B2/B1"
B6_PER_CPU_QUIX = "worker/quix signals per CPU"
B6_PER_CPU_AIOKAFKA = "worker/aiokafka signals per CPU"
B4_RATIO = "K100/K1 per-decision"
B5_READY = "restart → ready"
B5_PROJECTED = "restart → ready, 1M keys (projected)"


def ack_p99_metric(rate: int) -> str:
    return f"p99 signal→ack @{rate}/s"


def floor_ratio_metric(rate: int) -> str:
    return f"B3/B0 p99 @{rate}/s"


def keep_up_metric(rate: int) -> str:
    return f"acked/offered orders @{rate}/s"


def _value(results: Sequence[BenchResult], key: str, metric: str) -> float | None:
    for result in results:
        if result.key == key:
            return result.value(metric)
    return None


def goals(profile: Profile, results: Sequence[BenchResult]) -> list[Goal]:
    if profile.ledger_keys >= GOAL_KEYS:
        recovery = _value(results, "B5", B5_READY)
        recovery_target = "B5 restart to ready <= 30 s, 1M keys"
    else:
        recovery = _value(results, "B5", B5_PROJECTED)
        recovery_target = (
            f"B5 restart to ready <= 30 s, 1M keys (projected from {profile.ledger_keys:,} keys "
            "at the measured restore rate)"
        )
    k = profile.accounts
    latency = [
        Goal(
            f"G2 latency @{rate}/s",
            f"B3 p99 signal→ack <= {limit:g} x B0 p99 (same run), {rate}/s, "
            f"{GOAL_ACCOUNTS} accounts",
            "<=",
            limit,
            _value(results, "B3", floor_ratio_metric(rate)) if k == GOAL_ACCOUNTS else None,
        )
        for rate, limit in FLOOR_RATIOS.items()
    ]
    keep_up = Goal(
        f"G2 backlog @{KEEP_UP_RATE}/s",
        f"B3 acknowledged orders/s >= {KEEP_UP:g} x offered (no growing backlog)",
        ">=",
        KEEP_UP,
        _value(results, "B3", keep_up_metric(KEEP_UP_RATE)) if k == GOAL_ACCOUNTS else None,
    )
    return [
        Goal(
            "G1 pipeline",
            f"B6 worker signals/s per CPU >= {G1_QUIX:g} x Quix Streams peer's (same run)",
            ">=",
            G1_QUIX,
            _value(results, "B6", B6_PER_CPU_QUIX),
        ),
        Goal(
            "G1 stretch",
            f"B6 worker signals/s per CPU >= {G1_AIOKAFKA:g} x plain aiokafka loop's",
            ">=",
            G1_AIOKAFKA,
            _value(results, "B6", B6_PER_CPU_AIOKAFKA),
        ),
        *latency,
        keep_up,
        Goal("G3 scaling", "B4 K=100 >= 0.8 x K=1", ">=", 0.8, _value(results, "B4", B4_RATIO)),
        Goal("G4 recovery", recovery_target, "<=", 30.0, recovery, "s"),
    ]
