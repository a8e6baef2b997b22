from __future__ import annotations

from datetime import timedelta

import pytest

from streams.domain.strategy.circuit import CircuitBreaker
from streams.domain.strategy.registry import StrategyConfigError, StrategyRegistry
from tests.unit.strategy.fixtures import T0, config


def test_plugins_resolve_by_type_and_version() -> None:
    registry = StrategyRegistry(
        [config("b", "vwap_reversion"), config("a", "macd_rsi_momentum", version=1)]
    )
    assert [s.id for s in registry.strategies] == ["a", "b"]
    assert type(registry.strategies[0].plugin).__name__ == "MacdRsiMomentum"
    assert registry.resolve("legacy_macd_rsi", "1").__name__ == "LegacyMacdRsi"


def test_unknown_version_names_the_entry() -> None:
    with pytest.raises(StrategyConfigError, match=r"'mom'.*macd_rsi_momentum@9"):
        StrategyRegistry([config("mom", "macd_rsi_momentum", version="9")])


def test_bad_params_name_the_entry() -> None:
    with pytest.raises(StrategyConfigError, match=r"'vwap'.*entry_bps"):
        StrategyRegistry([config("vwap", "vwap_reversion", params={"entry_bps": -1})])


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(StrategyConfigError, match="duplicate"):
        StrategyRegistry([config("x", "vwap_reversion"), config("x", "legacy_macd_rsi")])


def test_disabled_strategies_are_verified_but_not_enabled() -> None:
    registry = StrategyRegistry([config("off", "vwap_reversion", enabled=False)])
    assert registry.enabled() == ()
    assert registry.status()[0].enabled is False


def test_circuit_opens_after_n_errors_and_closes_after_cooldown_in_event_time() -> None:
    breaker = CircuitBreaker(3, timedelta(seconds=300))
    assert not breaker.record_error("s", T0, "boom")
    assert not breaker.record_error("s", T0 + timedelta(seconds=1), "boom")
    assert not breaker.is_open("s", T0 + timedelta(seconds=2))
    assert breaker.record_error("s", T0 + timedelta(seconds=2), "boom")  # third: opens
    opened_at = T0 + timedelta(seconds=2)
    assert breaker.is_open("s", opened_at + timedelta(seconds=299))
    assert not breaker.is_open("s", opened_at + timedelta(seconds=300))
    # closed with a fresh streak: one more error does not reopen it
    assert not breaker.record_error("s", opened_at + timedelta(seconds=301), "boom")
    assert not breaker.is_open("s", opened_at + timedelta(seconds=302))


def test_a_success_resets_the_streak() -> None:
    breaker = CircuitBreaker(2, timedelta(seconds=60))
    breaker.record_error("s", T0, "boom")
    breaker.record_success("s")
    assert not breaker.record_error("s", T0, "boom")
    assert not breaker.is_open("s", T0)
    assert breaker.state("s").total_errors == 2


def test_breaker_ignores_wall_clock_for_old_event_times() -> None:
    """A replay of last year's signals still sees the circuit open for the cooldown."""
    breaker = CircuitBreaker(1, timedelta(seconds=60))
    old = T0 - timedelta(days=365)
    breaker.record_error("s", old, "boom")
    assert breaker.is_open("s", old + timedelta(seconds=59))


def test_status_shows_degraded_strategies() -> None:
    registry = StrategyRegistry(
        [config("s", "vwap_reversion")], circuit_errors=1, circuit_cooldown=timedelta(seconds=5)
    )
    registry.circuit.record_error("s", T0, "ValueError: boom")
    (status,) = registry.status()
    assert status.degraded
    assert status.degraded_until == T0 + timedelta(seconds=5)
    assert status.as_dict()["last_error"] == "ValueError: boom"
