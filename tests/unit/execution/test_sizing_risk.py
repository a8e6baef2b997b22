"""Sizing (quantity, TIF, crypto symbols, caps) and the risk gate's reasons."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from schemas.decision import Action
from streams.domain.risk import LaneContext, RiskPolicy, control_reasons, gate_reasons
from streams.domain.sizing import SizingLimits, size_order
from streams.settings import Settings
from tests.unit.execution.fakes import T0, flags, make_decision, snapshot

LIMITS = SizingLimits(Decimal(5000), Decimal("0.25"), allow_shorts=False)


def test_equity_buy_whole_shares_day() -> None:
    result = size_order(make_decision(notional="1050", price="100"), snapshot(), LIMITS)
    assert result.plan is not None
    assert (result.plan.qty, result.plan.time_in_force, result.plan.side) == (
        10,
        "day",
        Action.buy,
    )
    assert result.plan.client_order_id == make_decision(notional="1050").decision_hash


def test_crypto_six_decimals_gtc_and_position_symbol() -> None:
    d = make_decision(symbol="BTC/USD", notional="1000", price="30000", action="sell")
    held = snapshot(holdings={"BTCUSD": ("0.01", "300")})
    result = size_order(d, held, LIMITS)
    assert result.plan is not None
    assert (result.plan.symbol, result.plan.qty, result.plan.time_in_force) == (
        "BTC/USD",
        Decimal("0.01"),  # capped at the position held (the fee leaves less than bought)
        "gtc",
    )
    buy = size_order(make_decision(symbol="BTC/USD", notional="1000", price="30000"), held, LIMITS)
    assert buy.plan is not None and buy.plan.qty == Decimal("0.033333")


@pytest.mark.parametrize(
    ("decision", "snap", "reason"),
    [
        (make_decision(price=None), snapshot(), "missing_price"),
        (make_decision(notional="6000"), snapshot(), "max_notional_exceeded"),
        (make_decision(action="sell"), snapshot(), "shorts_not_allowed"),
        (make_decision(notional="50", price="100"), snapshot(), "qty_below_minimum"),
        (make_decision(), snapshot(buying_power="500"), "insufficient_buying_power"),
        (
            make_decision(notional="2100"),  # 500 held + 2100 > 25% of 10000
            snapshot(equity="10000", holdings={"AAPL": ("5", "500")}),
            "max_position_pct_exceeded",
        ),
    ],
)
def test_sizing_rejections(decision, snap, reason) -> None:  # type: ignore[no-untyped-def]
    result = size_order(decision, snap, LIMITS)
    assert result.plan is None and reason in result.reasons


def test_sell_that_reduces_a_position_is_not_limited_by_concentration() -> None:
    held = snapshot(equity="1000", holdings={"AAPL": ("50", "5000")})
    result = size_order(make_decision(action="sell", notional="1000"), held, LIMITS)
    assert result.plan is not None and result.plan.qty == 10


def test_shorts_allowed_for_equities_never_for_crypto() -> None:
    shorting = SizingLimits(Decimal(5000), Decimal("0.25"), allow_shorts=True)
    assert size_order(make_decision(action="sell"), snapshot(), shorting).plan is not None
    crypto = make_decision(symbol="BTC/USD", action="sell", price="30000")
    assert size_order(crypto, snapshot(), shorting).reasons == ("shorts_not_allowed",)


def test_snapshot_after_order_reserves_buying_power() -> None:
    plan = size_order(make_decision(), snapshot(buying_power="1500"), LIMITS).plan
    assert plan is not None
    after = snapshot(buying_power="1500").after_order(plan)
    assert after.buying_power == 500 and after.holding("AAPL").qty == 10
    assert size_order(make_decision(), after, LIMITS).reasons == ("insufficient_buying_power",)


def policy(**env: str) -> RiskPolicy:
    return RiskPolicy.from_settings(Settings(**env))  # type: ignore[arg-type]


def lane(live: bool = False, control_kill: bool = False, **flag_args: object) -> LaneContext:
    return LaneContext("alpha", live, flags(**flag_args), control_kill)  # type: ignore[arg-type]


def test_gate_reasons_all_listed() -> None:
    p = policy(TRADING_SYMBOL_ALLOWLIST="MSFT, BTC/USD", TRADING_MAX_DECISION_AGE_SECONDS="60")
    old = make_decision(event_ts=T0 - timedelta(minutes=5))
    reasons = gate_reasons(p, lane(control_kill=True), old, strategy_enabled=False, now=T0)
    assert reasons == [
        "kill_switch_enabled",
        "decision_stale",
        "strategy_disabled",
        "symbol_not_allowed",
    ]
    ok = make_decision(symbol="BTC/USD", price="30000")
    assert gate_reasons(p, lane(), ok, strategy_enabled=True, now=T0) == []


def test_replay_is_exempt_from_the_age_guard_on_paper_lanes_only() -> None:
    p = policy(TRADING_MAX_DECISION_AGE_SECONDS="60")
    historic = T0 - timedelta(days=3)
    replay = make_decision(event_ts=historic, telemetry={"replay_id": "r1"})
    assert "decision_stale" not in gate_reasons(p, lane(), replay, strategy_enabled=True, now=T0)
    live_reasons = gate_reasons(p, lane(live=True), replay, strategy_enabled=True, now=T0)
    assert "decision_stale" in live_reasons
    plain = make_decision(event_ts=historic)
    assert "decision_stale" in gate_reasons(p, lane(), plain, strategy_enabled=True, now=T0)


def test_stale_ta_blocks_new_orders() -> None:
    p = policy()
    reasons = gate_reasons(p, lane(), make_decision(), strategy_enabled=True, now=T0, ta_stale=True)
    assert reasons == ["ta_stale"]


def test_kill_switch_sources_and_fail_safe() -> None:
    assert control_reasons(policy(TRADING_KILL_SWITCH_ENABLED="true"), lane(), "AAPL") == [
        "kill_switch_enabled"
    ]
    assert control_reasons(policy(), lane(kill_for="alpha"), "AAPL") == ["kill_switch_enabled"]
    assert control_reasons(policy(), lane(kill_for="beta"), "AAPL") == []
    assert control_reasons(policy(), lane(available=False), "AAPL") == ["flags_unavailable"]


def test_live_lane_needs_permission_and_flags() -> None:
    assert control_reasons(policy(), lane(live=True), "AAPL") == ["live_trading_disabled"]
    assert control_reasons(policy(TRADING_LIVE_ENABLED="true"), lane(live=True), "AAPL") == []


def test_a_strategy_can_tighten_the_position_cap_but_never_raise_it() -> None:
    snap = snapshot(equity="10000", holdings={"AAPL": ("5", "500")})
    # 500 held + 1000 = 15% of equity: within the operator's 25%.
    assert size_order(make_decision(notional="1000"), snap, LIMITS).plan is not None
    raised = make_decision(notional="2100", max_position_pct_equity=0.9)  # 26% > the cap
    assert "max_position_pct_exceeded" in size_order(raised, snap, LIMITS).reasons
    tightened = make_decision(notional="1000", max_position_pct_equity=0.1)  # 15% > 10%
    assert "max_position_pct_exceeded" in size_order(tightened, snap, LIMITS).reasons
