"""The lane service: resume after a rebalance, re-drive due decisions, kill-switch upkeep."""

from __future__ import annotations

import asyncio
from pathlib import Path

from schemas.control import ControlCommand
from streams.broker.pool import BrokerPool
from streams.domain.accounts import AccountRegistry
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.ledger import LedgerScan, received
from streams.execution.cursor import LaneCursor
from streams.execution.service import LaneService
from streams.observability.status import StatusBoard
from streams.settings import Settings
from tests.unit.execution.fakes import (
    T0,
    Clock,
    FakeBroker,
    Journal,
    MemoryIndex,
    MemoryLedger,
    account,
    flags,
    make_decision,
    snapshot,
)


class MemoryCursors:
    source = "kafka"

    def __init__(self) -> None:
        self.rows: dict[str, LaneCursor] = {}

    def get(self, label: str) -> LaneCursor | None:
        return self.rows.get(label)

    def advance(self, label: str, cursor: LaneCursor) -> bool:
        current = self.rows.get(label)
        if current is not None and cursor.position <= current.position:
            return False
        self.rows[label] = cursor
        return True


def service(tmp_path: Path, **env: str) -> tuple[LaneService, KillSwitchBook, MemoryLedger, Clock]:
    env = {"TRADING_PRICE_COLLAR_BPS": "0", **env}  # no TA prices here
    settings = Settings(TORGHUT_DATA_DIR=str(tmp_path), **env)  # type: ignore[arg-type]
    book, ledger, clock = KillSwitchBook(), MemoryLedger(Journal()), Clock()
    registry = AccountRegistry(accounts=(account("alpha"), account("beta")), source="test")
    svc = LaneService(
        settings,
        registry,
        ledger=ledger,
        index=MemoryIndex(),
        cursors=MemoryCursors(),
        sink=None,  # type: ignore[arg-type]
        brokers=BrokerPool(settings),
        flags=flags,
        book=book,
        board=StatusBoard(clock=clock),
        clock=clock,
    )
    return svc, book, ledger, clock


def test_resume_re_drives_only_unfinished_entries(tmp_path: Path) -> None:
    svc, _, ledger, _ = service(tmp_path)
    pending = received(make_decision(), T0)
    foreign = received(make_decision(account="gamma"), T0)
    ledger.rows[pending.key] = pending
    scan = LedgerScan(sizes={"alpha": 2, "gamma": 1}, unfinished=[pending, foreign])
    assert svc.resume(scan) == 1
    assert svc.lanes["alpha"].status.ledger_size == 2
    assert [d.decision_hash for d in svc.due_retries()] == [pending.decision_hash]
    assert svc.due_retries() == []  # held back until it is re-driven or the hold expires


def test_a_rebalance_makes_every_lane_size_from_a_fresh_snapshot(tmp_path: Path) -> None:
    svc, _, _, _ = service(tmp_path)
    lane = svc.lanes["alpha"]
    lane.snapshot = snapshot()  # kept from when this worker ran the lane before
    svc.resume(LedgerScan())
    assert lane.snapshot is None  # refreshed from the broker before the next sizing


def test_kill_switch_engage_cancels_open_orders_once(tmp_path: Path) -> None:
    svc, book, _, _ = service(tmp_path, TRADING_KILL_SWITCH_CANCEL_OPEN_ORDERS="true")
    brokers = {label: FakeBroker(Journal()) for label in svc.lanes}
    for label, lane in svc.lanes.items():
        lane.broker = brokers[label]

    async def run() -> None:
        svc.watch_controls({"alpha", "beta"})
        book.apply(ControlCommand(account="alpha", engaged=True, operator="op", reason="drill"))
        svc.watch_controls({"alpha", "beta"})
        svc.watch_controls({"alpha", "beta"})
        await asyncio.gather(*svc._tasks)

    asyncio.run(run())
    assert brokers["alpha"].calls == ["cancel"] and brokers["beta"].calls == []
    status = svc.lanes["alpha"].status
    assert status.kill_switch_engaged and status.kill_switch_reason == "control (alpha): drill"
    assert not svc.lanes["beta"].status.kill_switch_engaged
