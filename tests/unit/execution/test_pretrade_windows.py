"""Pre-trade windows rebuilt after a restart, the New York trading day, and buying power that
holds back buys the snapshot does not hold yet (issue #17)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.decision import Action
from streams.domain import pretrade
from streams.domain.ledger import LedgerState
from streams.domain.pretrade import AccountActivity, PendingBuy, PretradeLimits, Sent
from streams.domain.sizing import AccountSnapshot, OrderPlan
from streams.domain.trade_updates.model import Attribution, TradeUpdate
from streams.domain.trading_state import TradingStateBook
from streams.execution.order_guard import OrderGuard, buy_notional
from streams.observability.status import StatusBoard
from streams.persistence.rows import SubmissionRow
from streams.reconciliation.service import ReconciliationService
from streams.reconciliation.startup import GateState, LaneGates, StartupReconciliation
from streams.settings import Settings
from tests.unit.execution.fakes import make_decision, rig

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)  # 10:00 in New York


def plan(
    symbol: str = "AAPL", side: Action = Action.buy, qty: str = "10", h: str = "c"
) -> OrderPlan:
    return OrderPlan(
        client_order_id=h * 64,
        symbol=symbol,
        side=side,
        qty=Decimal(qty),
        time_in_force="day",
        price=Decimal(100),
    )


def test_the_trading_day_is_the_new_york_date() -> None:
    # 23:30 New York on Jan 5 is Jan 6 in UTC; midnight New York is 05:00 UTC (EST).
    assert pretrade.trading_day(datetime(2026, 1, 6, 4, 30, tzinfo=UTC)).isoformat() == (
        "2026-01-05"
    )
    assert pretrade.trading_day(datetime(2026, 1, 6, 5, 0, tzinfo=UTC)).isoformat() == (
        "2026-01-06"
    )
    assert pretrade.trading_day_start(NOW) == datetime(2026, 1, 5, 5, 0, tzinfo=UTC)
    # summer time: midnight New York is 04:00 UTC
    assert pretrade.trading_day_start(datetime(2026, 7, 1, 12, tzinfo=UTC)) == datetime(
        2026, 7, 1, 4, 0, tzinfo=UTC
    )
    limits = PretradeLimits(daily_notional_cap=Decimal(2500))
    activity = AccountActivity()
    activity.record(plan(qty="20"), "h1", datetime(2026, 1, 5, 22, 0, tzinfo=UTC))  # 2000
    late_evening = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)  # 22:00 New York, Jan 5
    assert pretrade.check(limits, activity, plan(qty="6"), "h2", late_evening) == [
        pretrade.DAILY_NOTIONAL
    ]
    next_morning = datetime(2026, 1, 6, 5, 0, 1, tzinfo=UTC)
    assert pretrade.check(limits, activity, plan(qty="6"), "h2", next_morning) == []


def sent(at: datetime, h: str, symbol: str = "AAPL", notional: str = "1000") -> Sent:
    return Sent(at, h, symbol, Action.buy, Decimal(notional))


def test_restored_orders_fill_every_window_once() -> None:
    limits = PretradeLimits(
        rate_per_minute=3, duplicate_intent=timedelta(seconds=30), daily_notional_cap=Decimal(5500)
    )
    activity = AccountActivity()
    activity.record(plan("MSFT"), "h-mine", NOW - timedelta(seconds=5))  # this worker saw it
    restored = [
        sent(NOW - timedelta(hours=3), "h-morning", "TSLA", "2000"),  # the day only
        sent(NOW - timedelta(days=1), "h-yesterday", "NVDA", "9000"),  # neither
        sent(NOW - timedelta(seconds=20), "h-dup", "AAPL"),
        sent(NOW - timedelta(seconds=5), "h-mine", "MSFT"),  # also in Postgres: counted once
    ]
    activity.restore(restored, NOW, limits.keep)
    assert activity.spent_today(NOW) == Decimal(4000)
    assert [s.decision_hash for s in activity.sent] == ["h-dup", "h-mine"]
    reasons = pretrade.check(limits, activity, plan("AAPL"), "h-new", NOW)
    assert reasons == [pretrade.DUPLICATE_INTENT]
    activity.record(plan("AMD"), "h-3", NOW)
    reasons = pretrade.check(limits, activity, plan("AMZN", qty="1"), "h-new", NOW)
    assert reasons == [pretrade.ORDER_RATE]  # three within the minute, one of them restored
    later = NOW + timedelta(minutes=2)
    reasons = pretrade.check(limits, activity, plan("AMZN", qty="10"), "h-new", later)
    assert reasons == [pretrade.DAILY_NOTIONAL]  # 4000 restored + 1000 sent + 1000 > 5500


def test_the_guard_restores_from_postgres_rows_with_the_accounts_own_window() -> None:
    guard = OrderGuard(
        TradingStateBook(),
        PretradeLimits(duplicate_intent=timedelta(seconds=5), daily_notional_cap=Decimal(3000)),
        overrides={"slow": {"duplicate_intent_seconds": 600}},
    )
    assert guard.restore_since("alpha", NOW) == pretrade.trading_day_start(NOW)
    just_after_midnight = pretrade.trading_day_start(NOW) + timedelta(minutes=1)
    assert guard.restore_since("slow", just_after_midnight) == just_after_midnight - timedelta(
        minutes=10
    )
    rows = [
        SubmissionRow("a" * 64, "BTC/USD", "buy", NOW - timedelta(minutes=5), Decimal(2500)),
    ]
    assert guard.restore("slow", rows, NOW) == 1
    assert guard.restore("alpha", rows, NOW) == 1
    entry = _entry("b", "BTC/USD")
    assert guard.refusals("slow", entry, None, NOW) == [
        pretrade.DUPLICATE_INTENT,
        pretrade.DAILY_NOTIONAL,
    ]
    assert guard.refusals("alpha", entry, None, NOW) == [pretrade.DAILY_NOTIONAL]
    assert guard.refusals("beta", entry, None, NOW) == []  # nothing of alpha's here


def _entry(h: str, symbol: str = "AAPL", notional: str = "1000", price: str = "100") -> Any:
    from streams.domain.ledger import received
    from streams.domain.sizing import SizingLimits, size_order

    d = make_decision(symbol=symbol, notional=notional, price=price, event_ts=NOW)
    d = d.model_copy(update={"decision_hash": h * 64})
    big = Decimal(10**7)
    snap = AccountSnapshot("alpha", NOW, big, big, big, big)
    result = size_order(d, snap, SizingLimits(Decimal(10**6), Decimal(1)))
    assert result.plan is not None
    return received(d, NOW).planned(result.plan, NOW)


def update(
    order_id: str,
    *,
    side: str = "buy",
    status: str = "new",
    client_order_id: str = "by-hand",
    event_ts: datetime = NOW,
    **order: Any,
) -> TradeUpdate:
    body = {"id": order_id, "client_order_id": client_order_id, "side": side, **order}
    return TradeUpdate(
        account_label="alpha",
        attribution=Attribution.payload,
        fingerprint=f"fp-{order_id}-{status}",
        event=status,
        event_ts=event_ts,
        order_id=order_id,
        client_order_id=client_order_id,
        status=status,
        side=side,
        source_topic="t",
        raw={"order": body},
    )


def test_what_a_buy_holds_back() -> None:
    assert buy_notional(update("1", qty="10", limit_price="90")) == Decimal(900)
    assert buy_notional(update("2", notional="1234.5")) == Decimal("1234.5")
    filled = update("3", qty="2", filled_avg_price="101").model_copy(
        update={"filled_avg_price": Decimal(101)}
    )
    assert buy_notional(filled) == Decimal(202)
    assert buy_notional(update("4", qty="2", type="market")) is None  # its fill will say
    assert buy_notional(update("5", side="sell", qty="2", limit_price="90")) is None


def test_buying_power_holds_back_buys_the_snapshot_does_not_hold() -> None:
    guard = OrderGuard(TradingStateBook(), PretradeLimits())
    before = NOW - timedelta(seconds=30)
    snap = AccountSnapshot(
        "alpha", NOW, Decimal(3000), Decimal(3000), Decimal(3000), Decimal(3000), requested_at=NOW
    )
    guard.observe_order(update("early", qty="10", limit_price="50"), before)  # in the snapshot
    guard.observe_order(update("late", qty="10", limit_price="90"), NOW + timedelta(seconds=1))
    guard.observe_order(update("late", qty="99", limit_price="90"), NOW + timedelta(seconds=2))
    guard.observe_order(update("sell", side="sell", qty="10", limit_price="90"), NOW)
    guard.observe_order(update("gone", status="canceled", qty="10", limit_price="90"), NOW)
    mine = _entry("m", notional="500")
    guard.sent("alpha", mine, NOW)
    guard.observe_order(
        update("own", client_order_id=mine.decision_hash, qty="5", limit_price="100"), NOW
    )
    # seen late, but the broker created it a minute before the snapshot: the snapshot holds it
    old = update(
        "old", qty="10", limit_price="90", created_at=(NOW - timedelta(minutes=1)).isoformat()
    )
    guard.observe_order(old, NOW + timedelta(seconds=1))
    assert [p.order_id for p in guard.pending_buys("alpha", snap)] == ["late"]
    assert [p.notional for p in guard.pending_buys("alpha", snap)] == [Decimal(900)]
    at = NOW + timedelta(seconds=3)
    fits_raw = _entry("x", notional="2500")  # 2500 <= 3000 but > 3000 - 900
    assert guard.refusals("alpha", fits_raw, snap, at) == [pretrade.INSUFFICIENT_BUYING_POWER]
    fits_rest = _entry("y", "MSFT", notional="2000", price="200")
    assert guard.refusals("alpha", fits_rest, snap, at) == []
    sell = _entry("z", "AAPL", notional="5000")
    sell = sell.model_copy(update={"plan": sell.plan.model_copy(update={"side": Action.sell})})
    assert pretrade.INSUFFICIENT_BUYING_POWER not in guard.refusals("alpha", sell, snap, at)
    assert guard.refusals("beta", fits_raw, snap, at) == []  # alpha's buys are alpha's
    # a snapshot requested after the buy was seen holds it: it is no longer held back here
    newer = AccountSnapshot(
        "alpha", at, Decimal(2100), Decimal(2100), Decimal(2100), Decimal(2100), requested_at=at
    )
    assert guard.pending_buys("alpha", newer) == []
    assert guard.refusals("alpha", _entry("w", notional="2000"), newer, at) == []
    assert (
        pretrade.buying_power_reason(fits_raw.plan, snap, [PendingBuy("p", Decimal(1), at)]) is None
    )


async def test_the_lane_refuses_at_the_last_moment_a_buy_above_what_is_left(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    guard = OrderGuard(TradingStateBook(), PretradeLimits())
    r.lane.env.order_refusals = guard.refusals
    r.lane.env.order_sent = guard.sent
    r.broker.account_body["buying_power"] = "3000"
    first = await r.lane.handle(make_decision(notional="500"))
    assert first.state is LedgerState.submitted
    # an order placed by hand after the snapshot: 10 @ 90 held back
    seen = r.clock() + timedelta(seconds=1)
    guard.observe_order(update("hand", qty="10", limit_price="90", event_ts=seen), seen)
    r.clock.advance(1)
    refused = await r.lane.handle(make_decision(notional="2000", event_ts=r.clock()))
    assert refused.state is LedgerState.rejected
    assert refused.reasons == (pretrade.INSUFFICIENT_BUYING_POWER,)  # 3000 - 500 - 900 < 2000
    r.clock.advance(1)
    sent_ = await r.lane.handle(make_decision(notional="1500", event_ts=r.clock()))
    assert sent_.state is LedgerState.submitted
    assert r.broker.calls.count("submit") == 2


class _Repo:
    def __init__(self, rows: list[SubmissionRow], fail: int) -> None:
        self.rows, self.fail, self.calls = rows, fail, 0

    async def recent_submissions(
        self, account: str, since: datetime, decided_since: datetime
    ) -> list[SubmissionRow]:
        self.calls += 1
        assert account == "alpha" and decided_since < since
        if self.calls <= self.fail:
            raise ConnectionRefusedError("postgres down")
        return self.rows


class _Repos:
    def __init__(self, repo: _Repo) -> None:
        self.repo = repo

    async def get(self) -> _Repo:
        return self.repo


async def test_a_postgres_failure_while_restoring_keeps_the_lane_reconciling() -> None:
    board = StatusBoard()
    gates = LaneGates(board)
    guard = OrderGuard(TradingStateBook(), PretradeLimits(daily_notional_cap=Decimal(1500)))
    now = datetime.now(UTC)
    rows = [SubmissionRow("a" * 64, "AAPL", "buy", now - timedelta(seconds=1), Decimal(1000))]
    repo = _Repo(rows, fail=2)
    service = ReconciliationService(
        Settings(),  # type: ignore[call-arg]
        None,  # type: ignore[arg-type]
        repositories=_Repos(repo),  # type: ignore[arg-type]
        brokers=None,  # type: ignore[arg-type]
        board=board,
        dead_letters=None,  # type: ignore[arg-type]
        owned_accounts=lambda: ["alpha"],
        trading_state=None,  # type: ignore[arg-type]
        windows=guard,
    )
    ready: list[str] = []
    runner = StartupReconciliation(
        gates,
        lambda label: _summary(service, label),
        timeout=5.0,
        on_ready=ready.append,
        backoff_base=0.05,
        backoff_cap=0.05,
    )
    runner.upkeep({"alpha"}, ["alpha"], resumed=True)
    for _ in range(50):
        if gates.state("alpha") is GateState.retrying:
            break
        await asyncio.sleep(0.005)
    assert gates.waits("alpha") is not None  # never trades with an empty window
    assert board.lane("alpha").database_unavailable is not None
    for _ in range(100):
        if ready:
            break
        await asyncio.sleep(0.01)
    assert ready == ["alpha"] and repo.calls == 3
    assert board.lane("alpha").database_unavailable is None
    assert guard.activity("alpha").spent_today(datetime.now(UTC)) == Decimal(1000)
    assert guard.refusals("alpha", _entry("b", notional="600"), None, datetime.now(UTC)) == [
        pretrade.DAILY_NOTIONAL
    ]
    await runner.close()


async def _summary(service: ReconciliationService, label: str) -> dict[str, Any]:
    return {"orders_restored": await service.restore_windows(label)}
