"""Start-up reconciliation: the lane gate (parked, not rejected), readiness, retries, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from streams.domain.ledger import LedgerState, Step
from streams.observability.status import StatusBoard
from streams.persistence.rows import ApplyOutcome, ApplyResult, ExecutionRow, OrderUpdateRow
from streams.reconciliation.startup import (
    GateState,
    LaneGates,
    StartupReconciliation,
    position_quantities,
    reconcile_open_orders,
)
from tests.unit.execution.fakes import make_decision, rig

NOW = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


# ------------------------------------------------------------ the lane waits, it does not reject
async def test_a_lane_parks_decisions_while_told_to_wait_then_trades(tmp_path: Path) -> None:
    r = rig(tmp_path)
    gates = LaneGates(StatusBoard(), clock=r.clock)
    r.lane.env.lane_waits = gates.waits
    d = make_decision()

    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.received and entry.retry_at is not None
    assert entry.last_error is not None and entry.last_error.startswith("reconciling")
    assert "broker:submit" not in r.journal.events and r.broker.calls == []
    assert d.decision_hash in r.lane.parked
    assert r.lane.status.rejections == 0

    gates.succeeded("alpha", {})
    entry = await r.lane.handle(d)  # re-driven
    assert entry.state is LedgerState.submitted
    assert r.journal.events.count("broker:submit") == 1


async def test_a_submitting_entry_is_looked_up_but_not_sent_while_waiting(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    first = await r.lane.handle(d)
    assert first.state is LedgerState.submitted
    # A different decision left `submitting` with no order at the broker: resolve looks it up
    # and, told to wait, parks it instead of sending.
    d2 = make_decision(symbol="MSFT")
    planned = await r.lane.handle(d2)
    assert planned.state is LedgerState.submitted
    stuck = replace_state(planned)
    await r.ledger.put(stuck)
    r.broker.orders.pop(d2.decision_hash, None)
    r.lane.env.lane_waits = lambda label: "reconciling: test"
    submits = r.journal.events.count("broker:submit")
    entry = await r.lane.handle(d2)
    assert entry.state is LedgerState.submitting and entry.retry_at is not None
    assert r.journal.events.count("broker:submit") == submits


def replace_state(entry: Any) -> Any:
    return entry.model_copy(update={"state": LedgerState.submitting, "persisted": False})


async def test_a_stale_decision_is_rejected_not_parked_forever(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.lane.env.lane_waits = lambda label: "reconciling: test"
    d = make_decision()
    assert (await r.lane.handle(d)).retry_at is not None  # parked while young
    r.clock.advance(3 * 3600)  # past the age limit, still reconciling
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.rejected and entry.step in (Step.persist, Step.done)
    assert "stale" in " ".join(entry.reasons)
    assert r.broker.calls == []


# ---------------------------------------------------------------- gates and readiness
def test_gates_readiness_waits_for_first_attempts_only() -> None:
    board = StatusBoard()
    gates = LaneGates(board, clock=lambda: NOW)
    assert gates.waits("a") is not None  # never reconciled: closed
    gates.reset(["a", "b"])
    gates.started("a")
    check = gates.readiness(["a", "b"])
    assert not check.ok and "a" in check.detail and "b" in check.detail
    assert board.lane("a").snapshot()["reconciliation"]["state"] == "reconciling"

    gates.failed("a", "BrokerError:timeout", NOW)
    gates.succeeded("b", {"external_adopted": 1})
    check = gates.readiness(["a", "b"])
    assert check.ok and "failing" in check.detail  # a failing account never holds a rollout
    board.lane("a").configure(enabled=True)
    assert "reconciliation_failed" in board.lane("a").problems()
    assert gates.waits("a") is not None and gates.waits("b") is None
    assert board.lane("b").snapshot()["reconciliation"]["last_result"] == {"external_adopted": 1}
    # lanes another worker owns are not this worker's readiness
    assert gates.readiness(["b"]).ok and gates.readiness(["b"]).detail == "ok"


def test_disabled_gates_never_wait() -> None:
    gates = LaneGates(StatusBoard(), enabled=False)
    assert gates.waits("a") is None and gates.readiness(["a"]).ok


# ---------------------------------------------------------------- the runner
async def test_failures_retry_with_backoff_and_one_account_never_delays_another() -> None:
    board = StatusBoard()
    gates = LaneGates(board)
    calls: dict[str, int] = {"slow": 0, "bad": 0, "good": 0}
    ready: list[str] = []
    slow_release = asyncio.Event()

    async def attempt(label: str) -> Mapping[str, Any]:
        calls[label] += 1
        if label == "bad" and calls[label] < 3:
            raise RuntimeError("broker down")
        if label == "slow":
            await slow_release.wait()
        return {"n": calls[label]}

    runner = StartupReconciliation(
        gates, attempt, timeout=5.0, on_ready=ready.append, backoff_base=0.01, backoff_cap=0.02
    )
    runner.upkeep({"slow", "bad", "good"}, ["slow", "bad", "good", "other"], resumed=True)
    for _ in range(100):
        if "good" in ready and "bad" in ready:
            break
        await asyncio.sleep(0.01)
    assert ready[:2] == ["good", "bad"] or set(ready) == {"good", "bad"}
    assert calls["bad"] == 3
    assert gates.state("slow") is GateState.reconciling  # still waiting: held no one else
    assert gates.state("other") is GateState.pending
    slow_release.set()
    for _ in range(100):
        if "slow" in ready:
            break
        await asyncio.sleep(0.01)
    assert gates.state("slow") is GateState.ready
    # a later tick without a rebalance starts nothing again
    runner.upkeep({"slow", "bad", "good"}, ["slow", "bad", "good", "other"], resumed=False)
    await asyncio.sleep(0.02)
    assert calls == {"slow": 1, "bad": 3, "good": 1}
    # a rebalance that takes "good" away closes its gate; one that brings it back reconciles it
    runner.upkeep({"slow", "bad"}, ["slow", "bad", "good"], resumed=True)
    assert gates.waits("good") is not None
    await runner.close()


async def test_an_attempt_is_bounded_by_its_timeout() -> None:
    gates = LaneGates(StatusBoard())

    async def hangs(label: str) -> Mapping[str, Any]:
        await asyncio.sleep(60)
        return {}

    runner = StartupReconciliation(gates, hangs, timeout=0.05, backoff_base=10, backoff_cap=10)
    runner.upkeep({"a"}, ["a"], resumed=True)
    for _ in range(100):
        if gates.state("a") is GateState.retrying:
            break
        await asyncio.sleep(0.01)
    assert gates.state("a") is GateState.retrying
    assert gates._gate("a").last_error == "timeout"
    await runner.close()


def test_retry_delay_doubles_up_to_the_cap() -> None:
    runner = StartupReconciliation(
        LaneGates(StatusBoard()),
        lambda label: asyncio.sleep(0),
        timeout=1,
        backoff_base=1,
        backoff_cap=5,
    )  # type: ignore[arg-type]
    assert [runner.retry_delay(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 5, 5]


# ---------------------------------------------------------------- open broker orders
class Store:
    def __init__(self, executions: list[ExecutionRow], decisions: set[str]) -> None:
        self.executions = executions
        self.decisions = decisions
        self.calls: list[tuple[str, str, str]] = []

    async def get_execution(
        self,
        account: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> ExecutionRow | None:
        for e in self.executions:
            if e.account_label == account and (
                e.client_order_id == client_order_id or e.alpaca_order_id == alpaca_order_id
            ):
                return e
        return None

    async def decision_exists(self, account: str, decision_hash: str) -> bool:
        return (account, decision_hash) in {tuple(x.split("|")) for x in self.decisions}

    async def upsert_execution(self, row: ExecutionRow) -> int:
        self.calls.append(("link", row.account_label, row.client_order_id))
        return 1

    async def adopt_external_order(self, row: ExecutionRow) -> int | None:
        self.calls.append(("adopt", row.account_label, row.client_order_id))
        return 2

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        self.calls.append(("apply", update.account_label, update.client_order_id or ""))
        return ApplyResult(ApplyOutcome.applied)


def order(oid: str, coid: str) -> dict[str, Any]:
    return {
        "id": oid,
        "client_order_id": coid,
        "symbol": "AAPL",
        "side": "buy",
        "qty": "3",
        "filled_qty": "0",
        "status": "new",
        "type": "limit",
        "order_type": "limit",
        "time_in_force": "day",
        "limit_price": "90",
        "created_at": NOW.isoformat(),
        "updated_at": NOW.isoformat(),
        "submitted_at": NOW.isoformat(),
    }


async def test_open_orders_are_folded_linked_or_adopted_under_their_account() -> None:
    from streams.domain.trade_updates.rest import execution_from_rest, order_update_from_rest

    known = ExecutionRow(
        account_label="a",
        client_order_id="c-known",
        symbol="AAPL",
        side="buy",
        order_type="market",
        time_in_force="day",
        submitted_qty=Decimal(3),
        status="new",
        alpaca_order_id="o-known",
    )
    # "b" has an execution with the client id of a's hand order: never a match for "a".
    other = replace(known, account_label="b", client_order_id="c-hand", alpaca_order_id="o-x")
    store = Store([known, other], {"a|c-crashed"})
    report = await reconcile_open_orders(
        "a",
        [
            order("o-known", "c-known"),
            order("o-crash", "c-crashed"),
            order("o-hand", "c-hand"),
            {"id": "bad", "qty": "NaN"},
        ],
        store,
        execution_from=execution_from_rest,
        update_from=order_update_from_rest,
        now=NOW,
    )
    assert report.open_orders == 4 and report.folded == 3
    assert report.linked == 1 and report.adopted == ["o-hand"] and len(report.skipped) == 1
    assert ("adopt", "a", "c-hand") in store.calls and ("link", "a", "c-crashed") in store.calls
    assert all(account == "a" for _, account, _ in store.calls)
    assert not any(kind == "cancel" for kind, _, _ in store.calls)


def test_position_quantities_are_signed() -> None:
    got = position_quantities(
        [
            {"symbol": "AAPL", "qty": "5", "side": "long"},
            {"symbol": "TSLA", "qty": "2", "side": "short"},
            {"symbol": "MSFT", "qty": "-1", "side": "short"},
            {"qty": "1"},
        ]
    )
    assert got == {"AAPL": Decimal(5), "TSLA": Decimal(-2), "MSFT": Decimal(-1)}


@pytest.mark.parametrize("state", list(GateState))
def test_only_ready_opens_the_gate(state: GateState) -> None:
    gates = LaneGates(StatusBoard())
    gates._gate("a").state = state
    assert (gates.waits("a") is None) is (state is GateState.ready)


async def test_a_lane_stopped_for_its_keys_rejects_instead_of_waiting(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.lane.env.lane_waits = lambda label: "reconciling: test"
    r.lane.mismatch = "keys reach another account"
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.rejected and "account_mismatch" in entry.reasons
    assert r.broker.calls == []
