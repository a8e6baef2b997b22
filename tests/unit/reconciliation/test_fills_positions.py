"""Fill replay (activities → trade updates, cursor paging) and position drift, pure logic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from streams.domain.trade_updates.model import TradeUpdate
from streams.observability.metrics import POSITION_DRIFT
from streams.observability.status import StatusBoard
from streams.persistence.rows import FillCursorRow
from streams.reconciliation.fills import (
    SOURCE_TOPIC,
    InvalidActivity,
    activity_update,
    execution_id_of,
    replay_fills,
)
from streams.reconciliation.positions import DriftReport, DriftTracker, position_drift

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


def activity(
    n: int, *, cum: str = "3", qty: str = "3", leaves: str = "0", **kw: Any
) -> dict[str, Any]:
    row = {
        "id": f"2026010515000{n:06d}::exec-{n}",
        "activity_type": "FILL",
        "transaction_time": (T0 + timedelta(seconds=n)).isoformat(),
        "type": "fill" if leaves == "0" else "partial_fill",
        "price": "100.5",
        "qty": qty,
        "side": "buy",
        "symbol": "AAPL",
        "leaves_qty": leaves,
        "order_id": f"order-{n}",
        "cum_qty": cum,
        "order_status": "filled" if leaves == "0" else "partially_filled",
    }
    row.update(kw)
    return row


# ---------------------------------------------------------------- activity → trade update
def test_a_fill_activity_is_a_trade_update_of_its_account() -> None:
    update = activity_update("alpha", activity(1, cum="5", qty="2", leaves="5"))
    assert update.account_label == "alpha" and update.source_topic == SOURCE_TOPIC
    assert update.execution_id == "exec-1" and update.order_id == "order-1"
    assert update.event == "partial_fill" and update.status == "partially_filled"
    assert update.filled_qty == Decimal(5) and update.qty == Decimal(2)
    assert update.order_qty == Decimal(10)
    # the same activity gives the same fingerprint; another account another one
    assert (
        update.fingerprint
        == activity_update("alpha", activity(1, cum="5", qty="2", leaves="5")).fingerprint
    )
    assert (
        update.fingerprint
        != activity_update("beta", activity(1, cum="5", qty="2", leaves="5")).fingerprint
    )


def test_execution_id_comes_from_its_field_or_the_activity_id() -> None:
    assert execution_id_of({"id": "20260105::abc"}) == "abc"
    assert execution_id_of({"id": "20260105::abc", "execution_id": "x"}) == "x"
    assert execution_id_of({"id": "no-separator"}) is None


@pytest.mark.parametrize(
    "change",
    [
        {"type": "dividend"},
        {"order_id": None},
        {"cum_qty": "NaN"},
        {"qty": "-1"},
        {"price": None},
        {"transaction_time": None},
        {"id": "nosep", "execution_id": None},
    ],
)
def test_an_unusable_activity_is_refused_with_a_reason(change: dict[str, Any]) -> None:
    with pytest.raises(InvalidActivity):
        activity_update("alpha", activity(1, **change))


# ---------------------------------------------------------------- replay
class Source:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.calls: list[tuple[str | None, int, str]] = []

    async def fill_activities(
        self, page_token: str | None = None, page_size: int = 100, direction: str = "asc"
    ) -> list[dict[str, Any]]:
        self.calls.append((page_token, page_size, direction))
        rows = self.rows if direction == "asc" else list(reversed(self.rows))
        if page_token is not None:
            ids = [r["id"] for r in rows]
            rows = rows[ids.index(page_token) + 1 :]
        return rows[:page_size]


class Cursors:
    def __init__(self, cursor: FillCursorRow | None = None) -> None:
        self.cursor = cursor
        self.advanced: list[str] = []

    async def fill_cursor(self, account: str) -> FillCursorRow | None:
        return self.cursor

    async def init_fill_cursor(
        self, account: str, page_token: str | None, baseline: Mapping[str, Decimal]
    ) -> FillCursorRow:
        self.cursor = FillCursorRow(account, page_token, dict(baseline))
        return self.cursor

    async def advance_fill_cursor(self, account: str, page_token: str) -> None:
        self.advanced.append(page_token)


class Applied:
    def __init__(self) -> None:
        self.batches: list[list[TradeUpdate]] = []

    async def __call__(self, updates: Sequence[TradeUpdate]) -> None:
        self.batches.append(list(updates))


async def no_baseline(account: str) -> Mapping[str, Decimal]:
    return {"AAPL": Decimal(7)}


async def test_first_replay_starts_at_the_newest_fill_with_the_baseline() -> None:
    source, cursors, applied = Source([activity(1), activity(2)]), Cursors(), Applied()
    report = await replay_fills("alpha", source, cursors, applied, baseline=no_baseline)
    assert report.initialised and report.fills == 0 and applied.batches == []
    assert cursors.cursor == FillCursorRow("alpha", activity(2)["id"], {"AAPL": Decimal(7)})


async def test_replay_pages_after_the_cursor_and_stores_it_after_each_page() -> None:
    rows = [activity(n) for n in range(1, 8)]
    source, applied = Source(rows), Applied()
    cursors = Cursors(FillCursorRow("alpha", rows[1]["id"]))
    report = await replay_fills(
        "alpha", source, cursors, applied, baseline=no_baseline, page_size=2
    )
    assert report.fills == 5 and report.pages == 3 and report.complete
    assert [u.execution_id for b in applied.batches for u in b] == [
        f"exec-{n}" for n in range(3, 8)
    ]
    assert cursors.advanced == [rows[3]["id"], rows[5]["id"], rows[6]["id"]]
    assert all(call[2] == "asc" for call in source.calls)


async def test_replay_stops_at_its_page_limit_and_skips_unusable_rows() -> None:
    rows = [activity(n) for n in range(1, 6)]
    rows[1] = {**rows[1], "qty": "bogus"}
    source, applied = Source(rows), Applied()
    cursors = Cursors(FillCursorRow("alpha", None))
    report = await replay_fills(
        "alpha", source, cursors, applied, baseline=no_baseline, page_size=2, max_pages=2
    )
    assert not report.complete and report.pages == 2 and report.fills == 3
    assert len(report.skipped) == 1 and cursors.advanced[-1] == rows[3]["id"]


async def test_a_failing_apply_leaves_the_cursor_where_it_was() -> None:
    class Boom(Exception):
        pass

    async def failing(updates: Sequence[TradeUpdate]) -> None:
        raise Boom

    cursors = Cursors(FillCursorRow("alpha", None))
    with pytest.raises(Boom):
        await replay_fills("alpha", Source([activity(1)]), cursors, failing, baseline=no_baseline)
    assert cursors.advanced == []


# ---------------------------------------------------------------- position drift
def test_drift_is_broker_minus_baseline_plus_fills() -> None:
    broker = {"AAPL": Decimal(10), "MSFT": Decimal(2)}
    implied = {"AAPL": Decimal(7), "TSLA": Decimal(1)}
    baseline = {"AAPL": Decimal(3), "MSFT": Decimal(2)}
    assert position_drift(broker, implied, baseline) == {"TSLA": Decimal(-1)}
    assert position_drift({"AAPL": Decimal(12)}, implied, baseline) == {
        "AAPL": Decimal(2),
        "MSFT": Decimal(-2),
        "TSLA": Decimal(-1),
    }
    assert position_drift(broker, implied, baseline, tolerance=Decimal(1)) == {}


def test_a_drift_is_reported_once_it_lasts_its_grace() -> None:
    tracker = DriftTracker(timedelta(seconds=60))
    drift = {"AAPL": Decimal(5)}
    assert tracker.observe("a", drift, T0) == {}
    assert tracker.observe("a", drift, T0 + timedelta(seconds=30)) == {}
    assert tracker.observe("a", drift, T0 + timedelta(seconds=61)) == drift
    assert tracker.observe("b", drift, T0 + timedelta(seconds=61)) == {}  # its own clock
    assert tracker.observe("a", {}, T0 + timedelta(seconds=62)) == {}  # resolved: restarts
    assert tracker.observe("a", drift, T0 + timedelta(seconds=63)) == {}
    assert tracker.newly_reported("a", drift) == {"AAPL"}
    assert tracker.newly_reported("a", drift) == set()


class Setter:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def set_reducing(self, account: str, reason: str) -> None:
        self.calls.append((account, reason))


@pytest.mark.parametrize("set_reducing", [False, True])
async def test_a_reported_drift_is_a_gauge_a_problem_and_optionally_reducing(
    set_reducing: bool,
) -> None:
    board, setter = StatusBoard(), Setter()
    board.lane("drift-a").configure(enabled=True)
    board.lane("drift-b").configure(enabled=True)
    report = DriftReport(board, setter, set_reducing=set_reducing)
    await report.publish("drift-a", {"AAPL": Decimal(5)}, {"AAPL"})
    assert POSITION_DRIFT.labels(account="drift-a", symbol="AAPL")._value.get() == 5.0
    assert "position_drift" in board.lane("drift-a").problems()
    assert board.lane("drift-b").problems() == []
    assert setter.calls == ([("drift-a", "position_drift: AAPL +5")] if set_reducing else [])
    await report.publish("drift-a", {}, set())
    assert board.lane("drift-a").problems() == []
    sample = [
        s
        for m in POSITION_DRIFT.collect()
        for s in m.samples
        if s.labels.get("account") == "drift-a"
    ]
    assert sample == []
