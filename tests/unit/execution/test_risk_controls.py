"""Trading states, kill-switch actions and pre-trade controls: the pure rules (issue #17)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.codecs import DecodeError
from schemas.control import ControlCommand, ControlKind, KillMode, TradingState
from schemas.control import trading_state_command as state_command
from schemas.decision import AccountDecision, Action
from schemas.ta_signal import TaSignal
from streams.domain import pretrade
from streams.domain.kill_switch import KillSwitchBook, parse_key
from streams.domain.ledger import received
from streams.domain.pretrade import AccountActivity, PretradeLimits
from streams.domain.sizing import OrderPlan
from streams.domain.trading_state import (
    HALTED,
    REDUCING_NOT_REDUCING,
    TradingStateBook,
    reduces_position,
    refusal,
)
from streams.execution.control_actions import ControlActions, action_of
from streams.execution.order_guard import ControlTopicTradingState, OrderGuard
from streams.execution.price_feed import PriceFeed
from streams.observability.status import LaneStatus

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def plan(symbol: str = "AAPL", side: Action = Action.buy, qty: str = "10") -> OrderPlan:
    return OrderPlan(
        client_order_id="c" * 64,
        symbol=symbol,
        side=side,
        qty=Decimal(qty),
        time_in_force="day",
        price=Decimal(100),
    )


@pytest.mark.parametrize(
    ("side", "qty", "held", "reduces"),
    [
        (Action.sell, "5", "10", True),
        (Action.sell, "10", "10", True),
        (Action.sell, "11", "10", False),  # would flip to short
        (Action.sell, "1", "0", False),
        (Action.buy, "5", "-10", True),
        (Action.buy, "5", "10", False),
        (Action.buy, "11", "-10", False),
    ],
)
def test_reduces_position(side: Action, qty: str, held: str, reduces: bool) -> None:
    assert reduces_position(side, Decimal(qty), Decimal(held)) is reduces


def test_refusal_per_state() -> None:
    assert refusal(TradingState.active, Action.buy, Decimal(1), Decimal(0)) is None
    assert refusal(TradingState.halted, Action.sell, Decimal(1), Decimal(5)) == HALTED
    assert refusal(TradingState.reducing, Action.sell, Decimal(1), Decimal(5)) is None
    assert refusal(TradingState.reducing, Action.buy, Decimal(1), Decimal(5)) == (
        REDUCING_NOT_REDUCING
    )


def test_the_most_restrictive_scope_wins() -> None:
    book = TradingStateBook()
    assert book.effective("alpha").state is TradingState.active
    assert book.apply(state_command(TradingState.reducing, None, "op", "all"))
    assert book.effective("alpha").state is TradingState.reducing
    book.apply(state_command(TradingState.halted, "alpha", "op", "one"))
    assert book.effective("alpha").state is TradingState.halted
    assert book.effective("beta").state is TradingState.reducing
    book.apply(state_command(TradingState.active, "alpha", "op", "back"))
    effective = book.effective("alpha")
    assert effective.state is TradingState.reducing and effective.command is not None
    assert effective.command.scope == "*"
    assert not book.apply(state_command(TradingState.active, "alpha", "op", "again"))
    assert book.forget("*") and book.effective("alpha").state is TradingState.active


def test_commands_validate_kind_and_state() -> None:
    with pytest.raises(ValidationError):
        ControlCommand(kind=ControlKind.trading_state, engaged=True, operator="o", reason="r")
    with pytest.raises(ValidationError):  # engaged must say whether the state restricts
        ControlCommand(
            kind=ControlKind.trading_state,
            engaged=False,
            state=TradingState.halted,
            operator="o",
            reason="r",
        )
    with pytest.raises(ValidationError):
        ControlCommand(engaged=True, state=TradingState.halted, operator="o", reason="r")
    assert parse_key(b"trading_state:alpha") == (ControlKind.trading_state, "alpha")
    assert parse_key(b"nothing:alpha") is None


def test_action_of_each_command() -> None:
    kill = ControlCommand(account="a", engaged=True, operator="o", reason="r")
    assert action_of(kill) == "block"
    assert action_of(kill, cancel_on_engage=True) == "cancel"
    flatten = kill.model_copy(update={"mode": KillMode.flatten})
    assert action_of(flatten) == "flatten" and flatten.acts
    assert action_of(kill.model_copy(update={"engaged": False})) == "release"
    assert action_of(state_command(TradingState.reducing, "a", "o", "r")) == "reducing"


class FakeBroker:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def cancel_open_orders(self) -> list[dict[str, Any]]:
        self.calls.append("cancel")
        return [{"id": "1"}]

    async def close_all_positions(self) -> list[dict[str, Any]]:
        self.calls.append("flatten")
        return [{"symbol": "AAPL", "status": 200}]

    async def set_suspend_trade(self, suspended: bool) -> dict[str, Any]:
        self.calls.append(f"suspend={suspended}")
        return {}

    async def list_orders(self, status: str = "open") -> list[dict[str, Any]]:
        return []


class FakeAudit:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], str] = {}

    async def claim(
        self, account_label: str, command: ControlCommand, action: str, stale_after: float
    ) -> int | None:
        key = (account_label, command.command_id)
        if self.rows.get(key) in ("done", "started"):
            return None
        self.rows[key] = "started"
        return 1

    async def finish(
        self,
        account_label: str,
        command_id: str,
        status: str,
        result: Any,
        error: str | None = None,
    ) -> None:
        self.rows[(account_label, command_id)] = status


async def test_a_flatten_runs_once_per_account_and_command() -> None:
    kills, audit, broker = KillSwitchBook(), FakeAudit(), FakeBroker()
    actions = ControlActions(kills, TradingStateBook(), audit, suspend_mirror=True)
    command = ControlCommand(
        account="alpha", engaged=True, mode=KillMode.flatten, operator="o", reason="r"
    )
    kills.apply(command)
    status = LaneStatus("alpha")
    await actions.run("alpha", actions.pending("alpha"), broker, status)
    assert broker.calls == ["flatten", "suspend=True"]
    assert actions.pending("alpha") == [] and actions.pending("beta") == []
    # A restarted worker (a new ControlActions, same audit rows) does nothing again.
    again = ControlActions(kills, TradingStateBook(), audit, suspend_mirror=True)
    await again.run("alpha", again.pending("alpha"), broker, status)
    assert broker.calls == ["flatten", "suspend=True"]
    assert status.control_action is not None and status.control_action["action"] == "flatten"


def test_pretrade_limits_each_reason() -> None:
    limits = PretradeLimits(
        max_order_qty=Decimal(50),
        max_open_orders=2,
        rate_per_second=2,
        rate_per_minute=3,
        duplicate_intent=timedelta(seconds=5),
        daily_notional_cap=Decimal(2500),
    )
    activity = AccountActivity()
    assert pretrade.check(limits, activity, plan(qty="60"), "h0", NOW) == [
        pretrade.MAX_ORDER_QTY,
        pretrade.DAILY_NOTIONAL,  # 6000 alone is above the day's 2500
    ]
    activity.record(plan(), "h1", NOW)
    assert pretrade.check(limits, activity, plan(), "h2", NOW) == [pretrade.DUPLICATE_INTENT]
    assert pretrade.check(limits, activity, plan(), "h1", NOW) == []  # the same decision again
    assert pretrade.check(limits, activity, plan("MSFT"), "h2", NOW + timedelta(seconds=6)) == []
    activity.record(plan("MSFT"), "h2", NOW + timedelta(seconds=6))
    later = NOW + timedelta(seconds=6, milliseconds=100)
    reasons = pretrade.check(limits, activity, plan("TSLA", qty="1"), "h3", later)
    assert pretrade.MAX_OPEN_ORDERS in reasons and pretrade.ORDER_RATE not in reasons
    activity.set_open_orders(0, later)  # the broker says none is open any more
    activity.record(plan("TSLA", qty="1"), "h3", later)
    reasons = pretrade.check(limits, activity, plan("NVDA", qty="1"), "h4", later)
    assert pretrade.ORDER_RATE in reasons  # 3 sent within the minute
    big = plan("AMD", qty="6")  # 600 on top of 2100 sent today
    reasons = pretrade.check(limits, activity, big, "h5", NOW + timedelta(seconds=70))
    assert reasons == [pretrade.DAILY_NOTIONAL]
    next_day = NOW + timedelta(days=1)
    assert pretrade.check(limits, activity, big, "h5", next_day) == []


def test_price_collar() -> None:
    limits = PretradeLimits(collar_bps=Decimal(100), reference_max_age=timedelta(seconds=60))
    order = plan()  # price 100
    assert (
        pretrade.collar_reason(limits, order.price, None, NOW) == pretrade.PRICE_REFERENCE_MISSING
    )
    old = (Decimal(100), NOW - timedelta(seconds=61))
    assert pretrade.collar_reason(limits, order.price, old, NOW) == pretrade.PRICE_REFERENCE_MISSING
    assert pretrade.collar_reason(limits, order.price, (Decimal("100.9"), NOW), NOW) is None
    assert pretrade.collar_reason(limits, order.price, (Decimal(102), NOW), NOW) == (
        pretrade.PRICE_COLLAR
    )
    assert pretrade.collar_reason(PretradeLimits(), order.price, None, NOW) is None


class FakeDecoder:
    async def decode(self, raw: bytes | None) -> Any:
        if raw == b"bad":
            raise DecodeError("ta_signal_invalid", "bad")
        return TaSignal.model_validate_json(raw or b"")


async def test_price_feed_keeps_the_latest_price_per_symbol() -> None:

    guard = OrderGuard(TradingStateBook(), PretradeLimits(collar_bps=Decimal(100)))
    feed = PriceFeed("localhost:9092", "signals", FakeDecoder(), guard, max_age_seconds=60)

    def signal(ts: datetime, price: float | None) -> bytes:
        body: dict[str, Any] = {
            "ingest_ts": ts.isoformat(),
            "event_ts": ts.isoformat(),
            "symbol": "BTC/USD",
            "seq": 1,
        }
        if price is not None:
            body["price"] = price
        return json.dumps(body).encode()

    await feed.apply(signal(NOW, 50000.0))
    await feed.apply(signal(NOW - timedelta(seconds=5), 1.0))  # older: ignored
    await feed.apply(signal(NOW, None))  # no price: skipped
    await feed.apply(b"bad")
    assert guard.reference("BTC/USD") == (Decimal("50000.0"), NOW)
    assert (feed.records, feed.skipped) == (2, 2)


def test_guard_exempts_paper_replays_from_the_collar_and_halts_on_state() -> None:

    states = TradingStateBook()
    guard = OrderGuard(
        states, PretradeLimits(collar_bps=Decimal(100)), live_accounts=frozenset({"live"})
    )

    def entry(label: str, replay: bool) -> Any:
        d = AccountDecision(
            decision_hash="a" * 64,
            account_label=label,
            strategy_id="s",
            symbol="AAPL",
            timeframe="1Min",
            event_ts=NOW,
            action=Action.buy,
            notional=Decimal(1000),
            confidence=0.5,
            price=Decimal(100),
            emitted_at=NOW,
            telemetry={"replay_id": "r1"} if replay else {},
        )
        return received(d, NOW).planned(plan(), NOW)

    assert guard.refusals("paper", entry("paper", True), None, NOW) == []
    assert guard.refusals("paper", entry("paper", False), None, NOW) == [
        pretrade.PRICE_REFERENCE_MISSING
    ]
    assert guard.refusals("live", entry("live", True), None, NOW) == [
        pretrade.PRICE_REFERENCE_MISSING
    ]
    states.apply(state_command(TradingState.halted, "paper", "o", "r"))
    assert guard.refusals("paper", entry("paper", True), None, NOW) == [HALTED]


def test_throttle_latches_to_halted_once() -> None:
    latched: list[ControlCommand] = []
    states = TradingStateBook()
    limits = PretradeLimits(rate_per_second=1, latch_hits=2)
    guard = OrderGuard(states, limits, latch=latched.append)
    first = received(_decision("a"), NOW).planned(plan(), NOW)
    assert guard.refusals("alpha", first, None, NOW) == []
    guard.sent("alpha", first, NOW)
    for n, h in enumerate("bc"):
        e = received(_decision(h), NOW).planned(plan(str(n)), NOW)
        assert pretrade.ORDER_RATE in guard.refusals("alpha", e, None, NOW)
    assert len(latched) == 1 and latched[0].state is TradingState.halted
    assert latched[0].account == "alpha" and "order rate throttle" in latched[0].reason
    assert states.effective("alpha").state is TradingState.halted
    assert states.effective("beta").state is TradingState.active


def _decision(h: str) -> Any:
    return AccountDecision(
        decision_hash=h * 64,
        account_label="alpha",
        strategy_id="s",
        symbol="AAPL",
        timeframe="1Min",
        event_ts=NOW,
        action=Action.buy,
        notional=Decimal(1000),
        confidence=0.5,
        price=Decimal(100),
        emitted_at=NOW,
    )


async def test_position_drift_sets_reducing_through_the_control_topic_once() -> None:
    states = TradingStateBook()
    published: list[ControlCommand] = []
    setter = ControlTopicTradingState(states, published.append)

    await setter.set_reducing("alpha", "position drift on AAPL")
    await setter.set_reducing("alpha", "position drift on MSFT")  # already reducing: nothing
    assert [(c.kind, c.account, c.state) for c in published] == [
        (ControlKind.trading_state, "alpha", TradingState.reducing)
    ]
    assert states.effective("alpha").state is TradingState.reducing
    assert states.effective("beta").state is TradingState.active  # never another account

    states.apply(state_command(TradingState.halted, "beta", "ops", "maintenance"))
    await setter.set_reducing("beta", "position drift on AAPL")  # halted is stricter: kept
    assert states.effective("beta").state is TradingState.halted
    assert len(published) == 1
