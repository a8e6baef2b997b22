from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from prometheus_client import REGISTRY

from schemas.decision import Action
from streams.domain.signal_order import SignalOrder
from streams.domain.strategy.model import StrategyConfig
from streams.domain.strategy.plugins.legacy import LegacyMacdRsi
from streams.flags.core import GLOBAL_ENTITY, FlagSnapshot, lane_entity
from streams.flags.static import evaluate_static, settings_defaults
from streams.settings import RuntimeMode, Settings
from streams.signal_pipeline import SignalPipeline
from tests.unit.strategy.fixtures import config, make_signal
from tests.unit.strategy.test_runtime import runtime


@dataclass(frozen=True)
class Acct:
    label: str
    enabled: bool = True


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


MULTI = Settings(TRADING_MULTI_ACCOUNT_ENABLED=True)  # type: ignore[call-arg]
MIXED = [
    config("p-boom", "exploding"),
    config("p-buy", "always_buy"),
    config("p-legacy-sell", LegacyMacdRsi.strategy_type, universe_symbols=("MSFT",)),
    config("p-mom", "macd_rsi_momentum"),
]


def pipeline(configs: list[StrategyConfig] = MIXED, fallback: bool = False) -> SignalPipeline:
    rt = runtime(configs, RuntimeMode.plugin_v3, fallback=fallback, errors=2)
    accounts = [Acct("p-a"), Acct("p-b"), Acct("p-off", enabled=False)]
    entities = [GLOBAL_ENTITY, *(lane_entity(a.label) for a in accounts)]
    snapshot = FlagSnapshot(evaluate_static(entities, settings_defaults(MULTI), {}))
    return SignalPipeline(
        rt, accounts, lambda: snapshot, "p-a", clock=lambda: datetime(2026, 1, 1, tzinfo=UTC)
    )


def test_pipeline_counts_evaluations_errors_and_missing_features() -> None:
    before = {
        "eval": metric("torghut_strategy_evaluations_total", strategy="p-buy"),
        "err": metric("torghut_strategy_errors_total", strategy="p-boom"),
        "miss": metric("torghut_strategy_missing_features_total", strategy="p-mom"),
    }
    p = pipeline()
    decisions = p.process(make_signal(rsi=None))
    assert [d.account_label for d in decisions] == ["p-a", "p-b"]
    assert metric("torghut_strategy_evaluations_total", strategy="p-buy") == before["eval"] + 1
    assert metric("torghut_strategy_errors_total", strategy="p-boom") == before["err"] + 1
    assert metric("torghut_strategy_missing_features_total", strategy="p-mom") == before["miss"] + 1


def test_degraded_gauge_follows_the_circuit() -> None:
    p = pipeline()
    for seq in (1, 2):
        p.process(make_signal(seq=seq))
    assert metric("torghut_strategy_degraded", strategy="p-boom") == 1
    assert metric("torghut_strategy_degraded", strategy="p-buy") == 0
    assert p.status()["strategies"][0]["degraded"] is True


def test_conflicts_fallback_emitted_and_dropped_counters() -> None:
    conflicts = metric("torghut_intent_conflict_total")
    p = pipeline()
    # MSFT: always_buy vs the legacy rule selling (macd < signal, rsi > 65)
    decisions = p.process(make_signal("MSFT", macd=(0.1, 0.3), rsi=70))
    assert metric("torghut_intent_conflict_total") == conflicts + 1
    assert {d.action for d in decisions} == {Action.buy}

    emitted = metric("torghut_decisions_emitted_total", account="p-b")
    SignalPipeline.record_emitted(decisions)
    assert metric("torghut_decisions_emitted_total", account="p-b") == emitted + 1

    stale = metric("torghut_signals_dropped_total", reason="stale")
    SignalPipeline.record_dropped(SignalOrder.stale)
    assert metric("torghut_signals_dropped_total", reason="stale") == stale + 1


def test_fallback_counter() -> None:
    fallbacks = metric("torghut_strategy_legacy_fallback_total")
    quiet_plugins = [config("p-mom", "macd_rsi_momentum")]  # wants RSI >= 50 to buy
    decisions = pipeline(quiet_plugins, fallback=True).process(make_signal(macd=(0.3, 0.1), rsi=30))
    assert decisions and decisions[0].strategy_id == "legacy-macd-rsi"
    assert decisions[0].telemetry["fallback"] is True
    assert metric("torghut_strategy_legacy_fallback_total") == fallbacks + 1
