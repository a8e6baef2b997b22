"""The asyncpg repository against real Postgres at the head schema."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from streams.persistence.repository import (
    ApplyOutcome,
    DecisionRow,
    ExecutionRow,
    OrderEventRow,
    OrderUpdateRow,
    PositionSnapshotRow,
    Repository,
)
from streams.persistence.status import BROKER_ORDER_REJECTED

pytestmark = pytest.mark.integration

T0 = datetime(2026, 2, 23, 14, 30, tzinfo=UTC)


def decision(account: str, n: int = 1, status: str = "planned") -> DecisionRow:
    return DecisionRow(
        account_label=account,
        decision_hash=f"{n:064x}",
        strategy_id="macd-rsi",
        symbol="AAPL",
        timeframe="1Sec",
        action="buy",
        event_ts=T0 + timedelta(seconds=n),
        status=status,
        qty=Decimal(3),
        notional=Decimal("600.50"),
        price=Decimal("200.1667"),
        confidence=0.8,
        decision_json={"notional": Decimal("600.50"), "sources": ["macd-rsi"]},
    )


def execution(
    account: str, n: int = 1, status: str = "new", order_id: str | None = "ord-1"
) -> ExecutionRow:
    return ExecutionRow(
        account_label=account,
        client_order_id=f"{n:064x}",
        alpaca_order_id=order_id,
        symbol="AAPL",
        side="buy",
        order_type="market",
        time_in_force="day",
        submitted_qty=Decimal(10),
        status=status,
        raw_order={"id": order_id, "status": status},
        last_event_ts=T0,
    )


def update(
    account: str, status: str, filled: str | None, *, seconds: int = 1, order_id: str = "ord-1"
) -> OrderUpdateRow:
    return OrderUpdateRow(
        account_label=account,
        status=status,
        event_ts=T0 + timedelta(seconds=seconds),
        alpaca_order_id=order_id,
        filled_qty=Decimal(filled) if filled is not None else None,
        filled_avg_price=Decimal("200.25") if filled else None,
        raw_order={"status": status},
    )


def event(
    account: str, n: int, *, status: str = "filled", coid: int = 1, **kw: object
) -> OrderEventRow:
    base: dict[str, object] = {
        "event_fingerprint": f"fp-{account}-{n}",
        "account_label": account,
        "source_topic": "torghut.trade-updates.v2",
        "source_partition": 0,
        "source_offset": n,
        "event_ts": T0 + timedelta(seconds=n),
        "alpaca_order_id": "ord-1",
        "client_order_id": f"{coid:064x}",
        "symbol": "AAPL",
        "event_type": "fill" if status == "filled" else status,
        "status": status,
        "filled_qty": Decimal(10) if status == "filled" else Decimal(0),
        "filled_avg_price": Decimal("200.25") if status == "filled" else None,
        "raw": {"event": status, "n": n},
    }
    base.update(kw)
    return OrderEventRow(**base)  # type: ignore[arg-type]


async def decision_status(dsn: str, account: str, n: int = 1) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(
            await conn.fetchval(
                "SELECT status FROM trade_decisions "
                "WHERE alpaca_account_label = $1 AND decision_hash = $2",
                account,
                f"{n:064x}",
            )
        )
    finally:
        await conn.close()


async def test_concurrent_upserts_of_one_decision_give_one_row(head_dsn: str) -> None:
    a, b = await Repository.connect(head_dsn, 2), await Repository.connect(head_dsn, 2)
    try:
        rows = [decision("paper", n) for n in range(1, 21)]
        await asyncio.gather(
            *(a.upsert_decisions([r]) for r in rows), *(b.upsert_decisions([r]) for r in rows)
        )
        await asyncio.gather(a.upsert_decisions(rows), b.upsert_decisions(rows + rows))
    finally:
        await a.close()
        await b.close()
    conn = await asyncpg.connect(head_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM trade_decisions") == 20
        body = await conn.fetchval("SELECT decision_json FROM trade_decisions LIMIT 1")
        assert '"notional": "600.50"' in body
    finally:
        await conn.close()


async def test_decision_status_only_moves_forward(repo: Repository, head_dsn: str) -> None:
    await repo.upsert_decisions([decision("paper")])
    assert await repo.set_decision_status("paper", f"{1:064x}", "submitted")
    await repo.upsert_decisions([decision("paper")])  # a replayed decision
    assert await decision_status(head_dsn, "paper") == "submitted"
    assert not await repo.set_decision_status("paper", f"{1:064x}", "planned")
    assert await repo.set_decision_status("paper", f"{1:064x}", "rejected", ["kill_switch"])
    assert not await repo.set_decision_status("paper", f"{1:064x}", "filled")
    assert await decision_status(head_dsn, "paper") == "rejected"
    old = await repo.decisions_pending("paper", datetime.now(UTC) + timedelta(minutes=1))
    assert old == []


async def test_out_of_order_update_never_regresses_a_filled_execution(
    repo: Repository, head_dsn: str
) -> None:
    await repo.upsert_decisions([decision("paper")])
    execution_id = await repo.upsert_execution(execution("paper"))
    assert await decision_status(head_dsn, "paper") == "submitted"

    filled = await repo.apply_order_update(update("paper", "filled", "10", seconds=5))
    assert (filled.outcome, filled.execution_id) == (ApplyOutcome.applied, execution_id)
    assert await decision_status(head_dsn, "paper") == "filled"

    for late in (
        update("paper", "partially_filled", "4", seconds=2),
        update("paper", "new", "0", seconds=1),
        update("paper", "canceled", "10", seconds=9),
    ):
        result = await repo.apply_order_update(late)
        assert result.outcome is ApplyOutcome.stale
        assert (result.status, result.filled_qty) == ("filled", Decimal(10))
    # Re-submitting the execution row (a lane retry) does not regress it either.
    assert await repo.upsert_execution(execution("paper", status="new")) == execution_id
    stored = await repo.get_execution("paper", client_order_id=f"{1:064x}")
    assert stored is not None
    assert (stored.status, stored.filled_qty) == ("filled", Decimal(10))
    assert await repo.open_executions("paper") == []
    assert await decision_status(head_dsn, "paper") == "filled"


async def test_fill_grows_while_a_higher_status_holds(repo: Repository) -> None:
    await repo.upsert_execution(execution("paper"))
    assert (
        await repo.apply_order_update(update("paper", "pending_cancel", "2", seconds=3))
    ).outcome is ApplyOutcome.applied
    grown = await repo.apply_order_update(update("paper", "partially_filled", "6", seconds=2))
    assert (grown.outcome, grown.status, grown.filled_qty) == (
        ApplyOutcome.applied,
        "pending_cancel",
        Decimal(6),
    )
    missing = await repo.apply_order_update(update("paper", "filled", "10", order_id="ord-x"))
    assert missing.outcome is ApplyOutcome.not_found
    with pytest.raises(ValueError):
        await repo.apply_order_update(
            OrderUpdateRow(account_label="paper", status="new", event_ts=T0)
        )


async def test_accounts_sharing_ids_never_touch_each_other(repo: Repository, head_dsn: str) -> None:
    # Same decision hash, same client order id, same Alpaca order id in two accounts.
    await repo.upsert_decisions([decision("acct-a"), decision("acct-b")])
    id_a = await repo.upsert_execution(execution("acct-a"))
    id_b = await repo.upsert_execution(execution("acct-b"))
    assert id_a != id_b

    result = await repo.apply_order_update(update("acct-a", "filled", "10"))
    assert (result.outcome, result.execution_id) == (ApplyOutcome.applied, id_a)
    by_client = OrderUpdateRow(
        account_label="acct-b",
        status="partially_filled",
        event_ts=T0,
        client_order_id=f"{1:064x}",
        filled_qty=Decimal(1),
    )
    assert (await repo.apply_order_update(by_client)).execution_id == id_b

    b = await repo.get_execution("acct-b", alpaca_order_id="ord-1")
    assert b is not None and b.id == id_b
    assert (b.status, b.filled_qty) == ("partially_filled", Decimal(1))
    assert [e.id for e in await repo.open_executions("acct-b")] == [id_b]
    assert await repo.open_executions("acct-a") == []
    assert await decision_status(head_dsn, "acct-a") == "filled"
    assert await decision_status(head_dsn, "acct-b") == "partially_filled"
    assert await repo.set_decision_status("acct-b", f"{1:064x}", "canceled")
    assert await decision_status(head_dsn, "acct-a") == "filled"

    assert await repo.append_order_events([event("acct-b", 1, status="canceled")]) == 1
    conn = await asyncpg.connect(head_dsn)
    try:
        linked = await conn.fetchval("SELECT execution_id FROM execution_order_events")
        assert linked == id_b
    finally:
        await conn.close()
    # Nothing of an unknown account matches, although both ids exist elsewhere.
    ghost = await repo.apply_order_update(update("acct-c", "filled", "10"))
    assert ghost.outcome is ApplyOutcome.not_found


async def test_append_order_events_stores_each_event_once(repo: Repository) -> None:
    batch = [
        event("paper", 1, status="new"),
        event("paper", 1, status="new"),  # same fingerprint in the batch
        event("paper", 2, status="partially_filled", event_fingerprint="other", source_offset=1),
        event("paper", 3, status="filled"),
        event("paper", 4, status="filled", source_partition=None, source_offset=None),
        event("paper", 5, status="filled", source_partition=None, source_offset=None),
    ]
    assert await repo.append_order_events(batch) == 4
    assert await repo.append_order_events(batch) == 0
    assert await repo.append_order_events([]) == 0


async def test_late_linking_folds_earlier_events_into_the_new_execution(
    repo: Repository, head_dsn: str
) -> None:
    # The broker's fill events arrive before the lane wrote the execution, in both accounts.
    await repo.append_order_events(
        [
            event("paper", 1, status="new"),
            event("paper", 2, status="filled"),
            event("other", 3, status="canceled"),
        ]
    )
    await repo.upsert_decisions([decision("paper")])
    execution_id = await repo.upsert_execution(execution("paper", status="pending_new"))
    stored = await repo.get_execution("paper", alpaca_order_id="ord-1")
    assert stored is not None
    assert (stored.status, stored.filled_qty, stored.avg_fill_price) == (
        "filled",
        Decimal(10),
        Decimal("200.25"),
    )
    assert await decision_status(head_dsn, "paper") == "filled"
    conn = await asyncpg.connect(head_dsn)
    try:
        rows = await conn.fetch(
            "SELECT alpaca_account_label, execution_id FROM execution_order_events ORDER BY id"
        )
    finally:
        await conn.close()
    assert [(r[0], r[1]) for r in rows] == [
        ("paper", execution_id),
        ("paper", execution_id),
        ("other", None),
    ]


async def test_cursor_snapshot_and_pending_decisions(repo: Repository) -> None:
    assert await repo.get_cursor("clickhouse", "paper") is None
    await repo.upsert_cursor("clickhouse", "paper", T0, "AAPL", 7)
    await repo.upsert_cursor("clickhouse", "live", T0, "MSFT", 1)
    await repo.upsert_cursor("clickhouse", "paper", T0 + timedelta(seconds=1), "BTC/USD", 8)
    cursor = await repo.get_cursor("clickhouse", "paper")
    assert cursor is not None
    assert (cursor.cursor_ts, cursor.cursor_symbol, cursor.cursor_seq) == (
        T0 + timedelta(seconds=1),
        "BTC/USD",
        8,
    )

    for minutes, equity in ((1, "1000"), (3, "1300"), (2, "1200")):
        await repo.insert_position_snapshot(
            PositionSnapshotRow(
                account_label="paper",
                as_of=T0 + timedelta(minutes=minutes),
                equity=Decimal(equity),
                cash=Decimal(500),
                buying_power=Decimal(1000),
                positions=[{"symbol": "AAPL", "qty": Decimal("1.5")}],
            )
        )
    latest = await repo.latest_position_snapshot("paper")
    assert latest is not None
    assert (latest.equity, latest.positions) == (Decimal(1300), [{"symbol": "AAPL", "qty": "1.5"}])
    assert await repo.latest_position_snapshot("live") is None

    await repo.upsert_decisions([decision("paper", 1), decision("paper", 2, "submitting")])
    await repo.upsert_decisions([decision("paper", 3, "rejected"), decision("live", 4)])
    future = datetime.now(UTC) + timedelta(minutes=1)
    pending = await repo.decisions_pending("paper", future)
    assert [p.decision_hash for p in pending] == [f"{1:064x}", f"{2:064x}"]
    assert await repo.decisions_pending("paper", T0) == []


async def test_decided_execution_is_written_only_with_its_decision(
    repo: Repository, head_dsn: str
) -> None:
    assert await repo.upsert_decided_execution(execution("paper")) is None
    assert await repo.get_execution("paper", client_order_id=f"{1:064x}") is None

    await repo.upsert_decisions([decision("paper")])
    execution_id = await repo.upsert_decided_execution(execution("paper"))
    assert execution_id is not None
    assert await decision_status(head_dsn, "paper") == "submitted"  # mirrored, same statement
    assert await repo.upsert_execution(execution("paper")) == execution_id
    conn = await asyncpg.connect(head_dsn)
    try:
        linked = await conn.fetchval(
            "SELECT e.trade_decision_id = d.id FROM executions e JOIN trade_decisions d"
            " ON d.alpaca_account_label = e.alpaca_account_label"
            " AND d.decision_hash = e.client_order_id WHERE e.id = $1",
            execution_id,
        )
    finally:
        await conn.close()
    assert linked is True


async def decision_reasons(dsn: str, account: str, n: int) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        value = await conn.fetchval(
            "SELECT rejection_reasons FROM trade_decisions "
            "WHERE alpaca_account_label = $1 AND decision_hash = $2",
            account,
            f"{n:064x}",
        )
    finally:
        await conn.close()
    return list(json.loads(value) if isinstance(value, str) else value)


async def test_a_decision_rejected_through_its_order_carries_a_reason(
    repo: Repository, head_dsn: str
) -> None:
    """An order the broker rejected after accepting it (trade update, reconciler look-up) used
    to leave its decision `rejected` with an empty reason list: every path names one now."""
    # 1: the trade update says rejected
    await repo.upsert_decisions([decision("paper", 1, status="submitted")])
    await repo.upsert_execution(execution("paper", 1, order_id="ord-1"))
    applied = await repo.apply_order_update(update("paper", "rejected", "0", order_id="ord-1"))
    assert applied.outcome is ApplyOutcome.applied
    # 2: the execution itself arrives rejected (a late execution row, the reconciler's fold)
    await repo.upsert_decisions([decision("paper", 2, status="submitted")])
    await repo.upsert_execution(execution("paper", 2, status="rejected", order_id="ord-2"))
    # 3: the reconciler's status update without reasons; 4: a row written rejected without any
    await repo.upsert_decisions([decision("paper", 3)])
    assert await repo.set_decision_status("paper", f"{3:064x}", "rejected")
    await repo.upsert_decisions([decision("paper", 4, status="rejected")])
    # 5: reasons given are kept
    await repo.upsert_decisions([decision("paper", 5)])
    assert await repo.set_decision_status("paper", f"{5:064x}", "rejected", ["kill_switch"])
    for n in (1, 2, 3, 4):
        assert await decision_status(head_dsn, "paper", n) == "rejected", n
        assert await decision_reasons(head_dsn, "paper", n) == [BROKER_ORDER_REJECTED], n
    assert await decision_reasons(head_dsn, "paper", 5) == ["kill_switch"]
