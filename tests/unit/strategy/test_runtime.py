from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest

from schemas.decision import Action
from streams.domain.fanout import fan_out
from streams.domain.strategy.catalog import build_runtime
from streams.domain.strategy.features import Features
from streams.domain.strategy.model import Proposal, StrategyConfig
from streams.domain.strategy.plugins import BUILTIN_PLUGINS
from streams.domain.strategy.plugins.base import PluginParams, StrategyPlugin
from streams.domain.strategy.registry import StrategyConfigError, StrategyRegistry
from streams.domain.strategy.runtime import Outcome, RuntimeOptions, StrategyRuntime
from streams.settings import RuntimeMode, Settings
from tests.unit.strategy.fixtures import T0, config, make_signal

EMITTED_AT = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Exploding(StrategyPlugin[PluginParams]):
    strategy_type: ClassVar[str] = "exploding"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "always raises"
    params_model: ClassVar[type[PluginParams]] = PluginParams

    def _required_features(self) -> frozenset[str]:
        return frozenset()

    def evaluate(self, features: Features) -> Proposal | None:
        raise RuntimeError("strategy bug")


class AlwaysBuy(StrategyPlugin[PluginParams]):
    strategy_type: ClassVar[str] = "always_buy"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "buys everything"
    params_model: ClassVar[type[PluginParams]] = PluginParams

    def _required_features(self) -> frozenset[str]:
        return frozenset()

    def evaluate(self, features: Features) -> Proposal | None:
        return Proposal(Action.buy, 0.8)


PLUGINS = (*BUILTIN_PLUGINS, Exploding, AlwaysBuy)
LEGACY = [config("legacy-macd-rsi", "legacy_macd_rsi")]


def runtime(
    configs: list[StrategyConfig],
    mode: RuntimeMode = RuntimeMode.plugin_v3,
    *,
    scheduler_enabled: bool = True,
    fallback: bool = False,
    errors: int = 3,
) -> StrategyRuntime:
    def registry(items: list[StrategyConfig]) -> StrategyRegistry:
        return StrategyRegistry(
            items, plugins=PLUGINS, circuit_errors=errors, circuit_cooldown=timedelta(seconds=300)
        )

    options = RuntimeOptions(mode, scheduler_enabled, fallback)
    return StrategyRuntime(registry(configs), registry(LEGACY), options)


def outcomes(result: Any) -> dict[str, Outcome]:
    return {e.strategy_id: e.outcome for e in result.evaluations}


def test_a_failing_plugin_is_isolated_and_counted() -> None:
    rt = runtime([config("a-boom", "exploding"), config("b-buy", "always_buy")])
    result = rt.evaluate(make_signal())
    assert outcomes(result) == {"a-boom": Outcome.error, "b-buy": Outcome.intent}
    assert [i.strategy_id for i in result.intents] == ["b-buy"]
    error = next(e for e in result.evaluations if e.outcome is Outcome.error)
    assert "RuntimeError: strategy bug" in error.detail
    assert rt.plugins.circuit.state("a-boom").total_errors == 1


def test_strategies_run_in_sorted_id_order() -> None:
    rt = runtime(
        [config("zz", "always_buy"), config("aa", "always_buy"), config("mm", "exploding")]
    )
    assert [e.strategy_id for e in rt.evaluate(make_signal()).evaluations] == ["aa", "mm", "zz"]


def test_circuit_opens_after_n_errors_and_closes_after_cooldown() -> None:
    rt = runtime([config("boom", "exploding")], errors=3)
    for seq in (1, 2, 3):  # event times T0+1s .. T0+3s
        assert outcomes(rt.evaluate(make_signal(seq=seq)))["boom"] is Outcome.error
    assert rt.plugins.status()[0].degraded
    at = T0 + timedelta(seconds=3 + 299)
    assert outcomes(rt.evaluate(make_signal(at=at)))["boom"] is Outcome.degraded
    later = T0 + timedelta(seconds=3 + 300)
    assert outcomes(rt.evaluate(make_signal(at=later)))["boom"] is Outcome.error
    assert not rt.plugins.status()[0].degraded  # a fresh streak after the cooldown


def test_circuit_opening_is_reported_once() -> None:
    rt = runtime([config("boom", "exploding")], errors=2)
    opened = [
        e.circuit_opened for seq in (1, 2) for e in rt.evaluate(make_signal(seq=seq)).evaluations
    ]
    assert opened == [False, True]


def test_missing_features_fail_closed() -> None:
    rt = runtime([config("mom", "macd_rsi_momentum"), config("vwap", "vwap_reversion")])
    result = rt.evaluate(make_signal(rsi=None, macd=(5.0, 0.1)))
    assert result.intents == ()
    assert {e.strategy_id: e.detail for e in result.evaluations} == {
        "mom": "rsi14",
        "vwap": "rsi14",
    }
    assert set(outcomes(result).values()) == {Outcome.missing_features}


def test_a_vwap_is_not_a_last_price() -> None:
    """Without a trade/quote price the sizing price falls back to VWAP; reversion cannot run."""
    rt = runtime([config("vwap", "vwap_reversion")])
    result = rt.evaluate(make_signal(price=None, rsi=20))
    assert result.evaluations[0].detail == "last_price"


def test_nan_features_are_missing() -> None:
    rt = runtime([config("legacy", "legacy_macd_rsi")])
    result = rt.evaluate(make_signal(rsi=float("nan")))
    assert outcomes(result) == {"legacy": Outcome.missing_features}


def test_strategy_runs_only_on_its_timeframe_and_universe() -> None:
    rt = runtime(
        [
            config("minute", "always_buy", base_timeframe="1Min"),
            config("msft-only", "always_buy", universe_symbols=("MSFT",)),
            config("aapl", "always_buy", universe_symbols=("AAPL",)),
        ]
    )
    result = rt.evaluate(make_signal("AAPL"))
    assert list(outcomes(result)) == ["aapl"]
    assert rt.evaluate(make_signal("AAPL", window="PT1M")).intents[0].strategy_id == "minute"


def test_notional_is_max_per_trade_times_size() -> None:
    rt = runtime(
        [
            config(
                "mom", "macd_rsi_momentum", notional="999.99", params={"size_with_confidence": True}
            )
        ]
    )
    (intent,) = rt.evaluate(make_signal(macd=(0.0275 + 0.1, 0.1))).intents
    assert intent.confidence == pytest.approx(0.7)
    assert str(intent.notional) == "699.99"  # rounded down to the cent


# -------------------------------------------------------------------- modes and fallback

LEGACY_BUY = {"macd": (0.3, 0.1), "rsi": 30.0}  # legacy buys; momentum wants RSI >= 50


def test_legacy_mode_runs_only_the_legacy_rule() -> None:
    rt = runtime([config("buy", "always_buy")], RuntimeMode.legacy)
    result = rt.evaluate(make_signal(**LEGACY_BUY))
    assert [i.strategy_id for i in result.intents] == ["legacy-macd-rsi"]


def test_scheduler_disabled_keeps_legacy_behaviour() -> None:
    configs = [config("buy", "always_buy")]
    dark = runtime(configs, RuntimeMode.scheduler_v3, scheduler_enabled=False)
    legacy = runtime(configs, RuntimeMode.legacy)
    for kwargs in (LEGACY_BUY, {}):
        signal = make_signal(**kwargs)  # type: ignore[arg-type]
        assert dark.evaluate(signal) == legacy.evaluate(signal)


def test_scheduler_enabled_runs_the_plugins() -> None:
    rt = runtime([config("buy", "always_buy")], RuntimeMode.scheduler_v3, scheduler_enabled=True)
    assert [i.strategy_id for i in rt.evaluate(make_signal()).intents] == ["buy"]


def test_legacy_fallback_when_plugins_yield_nothing() -> None:
    configs = [config("mom", "macd_rsi_momentum")]
    with_fallback = runtime(configs, fallback=True).evaluate(make_signal(**LEGACY_BUY))
    assert with_fallback.fallback_used
    assert [i.strategy_id for i in with_fallback.intents] == ["legacy-macd-rsi"]
    without = runtime(configs, fallback=False).evaluate(make_signal(**LEGACY_BUY))
    assert without.intents == () and not without.fallback_used


def test_no_fallback_when_plugins_produced_an_intent() -> None:
    result = runtime([config("buy", "always_buy")], fallback=True).evaluate(
        make_signal(**LEGACY_BUY)
    )
    assert not result.fallback_used
    assert [i.strategy_id for i in result.intents] == ["buy"]


def test_build_runtime_verifies_the_catalogue_even_in_legacy_mode() -> None:
    settings = Settings(TRADING_STRATEGIES_JSON='[{"id": "x", "type": "nope"}]')  # type: ignore[call-arg]
    with pytest.raises(StrategyConfigError, match=r"'x'.*nope@1"):
        build_runtime(settings)


# -------------------------------------------------------------------- deterministic replay


def fixture_signals() -> list[Any]:
    """Three symbols, 40 seconds: buys, sells, conflicts, quiet and incomplete signals."""
    shapes: list[dict[str, Any]] = [
        {"macd": (0.3, 0.1), "rsi": 60.0, "ema": (101.0, 100.0)},  # momentum buy
        {"macd": (0.1, 0.3), "rsi": 40.0, "ema": (99.0, 100.0)},  # momentum sell
        {"price": 99.7, "rsi": 35.0},  # vwap buy (+ momentum sell? no: rsi/ema)
        {"price": 100.4, "rsi": 66.0, "macd": (0.1, 0.0)},  # vwap sell vs weak momentum
        {"rsi": None},  # missing features
        {"macd": (0.1, 0.1), "rsi": 50.0},  # nothing
    ]
    return [
        make_signal(symbol, seq, **shapes[(seq + i) % len(shapes)])
        for seq in range(1, 41)
        for i, symbol in enumerate(("AAPL", "MSFT", "BTC/USD"))
    ]


def replay(lanes: tuple[str, ...]) -> tuple[list[Any], list[tuple[str, str, str]]]:
    settings = Settings(  # type: ignore[call-arg]
        TRADING_STRATEGY_RUNTIME_MODE="plugin_v3", TRADING_STRATEGY_RUNTIME_FALLBACK_LEGACY=True
    )
    rt = build_runtime(settings)
    intents, decisions = [], []
    for signal in fixture_signals():
        result = rt.evaluate(signal)
        intents.extend(result.intents)
        for d in fan_out(result.intents, lanes, signal, EMITTED_AT):
            decisions.append((d.account_label, d.decision_hash, d.model_dump_json()))
    return intents, decisions


def test_fixed_fixture_replayed_twice_gives_identical_intents_and_hashes() -> None:
    first_intents, first_decisions = replay(("acct-a", "acct-b"))
    second_intents, second_decisions = replay(("acct-b", "acct-a"))
    assert first_intents == second_intents
    assert first_decisions == second_decisions
    actions = {i.action for i in first_intents}
    assert actions == {Action.buy, Action.sell}  # the fixture exercises both sides
    assert any(i.conflict for i in first_intents)
    hashes = [h for _, h, _ in first_decisions]
    assert len(set(hashes)) == len(hashes)  # one hash per (account, intent)
