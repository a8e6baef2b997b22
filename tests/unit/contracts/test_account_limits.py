"""Per-account limit overrides in the registry (`limits`): parsed, validated, merged."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from streams.domain.accounts import load_registry
from streams.domain.pretrade import PretradeLimits
from streams.domain.trading_state import TradingStateBook
from streams.execution.order_guard import OrderGuard
from tests.unit.contracts.conftest import MakeSettings
from tests.unit.contracts.test_accounts import entry, errors_of, multi


def test_an_entry_without_limits_keeps_every_default(make_settings: MakeSettings) -> None:
    registry = load_registry(multi(make_settings, [entry("alpha")]))
    account = registry.get("alpha")
    assert account is not None and account.limits.overrides() == {}


def test_overrides_are_parsed_and_merged_over_the_settings(make_settings: MakeSettings) -> None:
    limits = {
        "max_order_qty": 50,
        "max_notional_per_order": 2500,
        "max_open_orders": 4,
        "order_rate_per_second": 1,
        "order_rate_per_minute": 10,
        "duplicate_intent_seconds": 30,
        "daily_notional_cap": 1500,
        "price_collar_bps": 150,
    }
    settings = multi(make_settings, [entry("alpha", limits=limits), entry("beta")])
    registry = load_registry(settings)
    alpha, beta = registry.get("alpha"), registry.get("beta")
    assert alpha is not None and beta is not None
    assert alpha.limits.overrides() == limits
    guard = OrderGuard(
        TradingStateBook(),
        PretradeLimits.from_settings(settings),
        overrides={a.label: a.limits.overrides() for a in registry.accounts},
    )
    mine, default = guard.limits_for("alpha"), guard.limits_for("beta")
    assert default == PretradeLimits.from_settings(settings)
    assert mine.max_order_qty == Decimal(50) and mine.max_open_orders == 4
    assert (mine.rate_per_second, mine.rate_per_minute) == (1, 10)
    assert mine.duplicate_intent == timedelta(seconds=30)
    assert mine.daily_notional_cap == Decimal(1500) and mine.collar_bps == Decimal(150)
    assert mine.latch_hits == default.latch_hits  # not overridable: the settings'
    assert guard.any_limit(lambda x: x.collar_bps > 0)  # the collar's prices must be read
    assert not OrderGuard(TradingStateBook(), default).any_limit(lambda x: x.collar_bps > 0)


def test_negative_and_unknown_limits_are_clear_errors(make_settings: MakeSettings) -> None:
    errors = errors_of(
        make_settings,
        [
            entry("alpha", limits={"daily_notional_cap": -1}),
            entry("beta", limits={"max_orders": 3, "max_open_orders": 2}),
            entry("gamma", limits=[1]),
        ],
    )
    assert any(
        e.startswith("accounts[0] 'alpha': limits.daily_notional_cap:")
        and "greater than or equal to 0" in e
        for e in errors
    ), errors
    assert any(
        e.startswith("accounts[1] 'beta': limits.max_orders: unknown limit (known: max_order_qty")
        for e in errors
    ), errors
    assert any(e.startswith("accounts[2] 'gamma': limits:") for e in errors), errors
    assert len(errors) == 3


@pytest.mark.parametrize(
    "variable",
    ["TRADING_DAILY_NOTIONAL_CAP", "TRADING_MAX_ORDER_QTY", "TRADING_ORDER_RATE_PER_MINUTE"],
)
def test_a_negative_default_limit_is_refused(make_settings: MakeSettings, variable: str) -> None:
    with pytest.raises(ValidationError) as caught:
        make_settings(**{variable: "-5"})
    assert "greater than or equal to 0" in str(caught.value)
