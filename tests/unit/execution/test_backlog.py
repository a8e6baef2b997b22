"""Deferred decisions: re-driven oldest first, as soon as their account has room, never more in
flight than it has free slots (streams/execution/backlog.py and its use by the lanes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from schemas.codecs import decode_decision, encode_decision
from schemas.decision import AccountDecision
from streams.broker.pool import BrokerPool
from streams.dlq import DeadLetters
from streams.domain.accounts import AccountRegistry
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.ledger import LedgerScan, LedgerState, ledger_key, received
from streams.domain.sizing import OrderPlan
from streams.execution.backlog import Backlog
from streams.execution.lane import DEFERRED
from streams.execution.orchestration import MAX_PER_ACCOUNT, LanesRunner
from streams.execution.service import RETRY_HOLD, LaneService
from streams.observability.status import StatusBoard
from streams.settings import Settings
from tables.durable import ChangelogAcks
from tests.unit.execution.fakes import (
    T0,
    Clock,
    FakeBroker,
    Journal,
    MemoryIndex,
    MemoryLedger,
    MemorySink,
    account,
    flags,
    make_decision,
)
from tests.unit.execution.test_service import MemoryCursors

LOST = timedelta(seconds=30)


def deferred(backlog: Backlog, *hashes: str) -> None:
    """The reader diverted them (the account full) and their deferral is durable."""
    for h in hashes:
        assert backlog.admit(h, full=True) is False
        backlog.ready(h)


# ---------------------------------------------------------------- the backlog alone


def test_room_limited_oldest_first() -> None:
    b = Backlog()
    deferred(b, *"abcdef")
    assert b.due(2, T0, LOST) == ["a", "b"]
    assert b.due(2, T0, LOST) == []  # both still on their way: the room is theirs
    assert b.due(5, T0, LOST) == ["c", "d", "e"]  # room for 5, 2 in flight
    assert b.in_flight == 5
    assert b.admit("a", full=False) is True  # read back: takes the slot kept for it
    assert b.due(1, T0, LOST) == []  # 4 still on their way for 1 free slot
    assert b.hashes() == list("bcdef") and len(b) == 5


def test_a_full_account_gets_nothing_re_driven() -> None:
    b = Backlog()
    deferred(b, *"abc")
    for _ in range(5):
        assert b.due(0, T0, LOST) == []
    assert b.in_flight == 0


def test_a_re_drive_that_finds_the_account_full_again_keeps_its_place() -> None:
    b = Backlog()
    deferred(b, *"abc")
    assert b.due(1, T0, LOST) == ["a"]
    assert b.admit("a", full=True) is False  # something took the slot meanwhile
    assert b.deferred_again == 1 and b.in_flight == 0
    assert b.due(0, T0, LOST) == []  # no room: not sent again, no loop
    assert b.due(2, T0, LOST) == ["a", "b"]  # room again: still the oldest


def test_new_decisions_wait_behind_the_backlog_even_with_room() -> None:
    b = Backlog()
    assert b.admit("x", full=False) is True  # nothing deferred: straight on
    deferred(b, "a")
    assert b.admit("n", full=False) is False  # `a` is older: `n` queues behind it
    b.ready("n")
    assert b.due(16, T0, LOST) == ["a", "n"]
    assert b.admit("a", full=False) and b.admit("n", full=False)
    assert len(b) == 0 and b.admit("y", full=False) is True


def test_only_durable_deferrals_are_re_driven_in_reader_order() -> None:
    b = Backlog()
    assert b.admit("a", full=True) is False
    assert b.admit("b", full=True) is False
    b.ready("b")  # b's deferral landed first
    assert b.due(5, T0, LOST) == ["b"]  # a is not in the ledger yet: never re-driven
    b.ready("a")
    assert b.due(5, T0, LOST) == ["a"]
    c = Backlog()
    assert c.admit("a", full=True) is False
    assert c.admit("b", full=True) is False
    c.ready("b")
    c.ready("a")
    assert c.due(5, T0, LOST) == ["a", "b"]  # the reader's order, not the acks' order


def test_a_re_drive_never_read_back_is_handed_out_again_after_the_hold() -> None:
    b = Backlog()
    deferred(b, "a", "b")
    assert b.due(1, T0, LOST) == ["a"]
    assert b.due(1, T0 + LOST - timedelta(seconds=1), LOST) == []
    assert b.due(1, T0 + LOST, LOST) == ["a"]  # lost: again, at its place


def test_unsent_and_discarded_re_drives() -> None:
    b = Backlog()
    deferred(b, "a", "b", "c")
    assert b.due(2, T0, LOST) == ["a", "b"]
    b.unsent("b")  # the send failed
    b.discard("a")  # taken up another way
    assert b.due(3, T0, LOST) == ["b", "c"]
    b.clear()
    assert len(b) == 0 and b.due(3, T0, LOST) == [] and b.in_flight == 0


def test_a_re_drive_sent_by_an_earlier_owner_is_taken_when_there_is_room() -> None:
    b = Backlog()
    deferred(b, "a", "b")
    assert b.admit("b", full=False) is True  # not counted in flight here, but deferred here
    assert b.hashes() == ["a"]
    assert b.admit("a", full=True) is False and b.hashes() == ["a"]  # full: stays


# ---------------------------------------------------------------- the lanes, end to end

SETTINGS = {
    "TRADING_PRICE_COLLAR_BPS": "0",
    "TRADING_ORDER_RATE_PER_SECOND": "0",
    "TRADING_ORDER_RATE_PER_MINUTE": "0",
    "TRADING_DUPLICATE_INTENT_SECONDS": "0",
    "TRADING_DAILY_NOTIONAL_CAP": "0",
    "TRADING_MAX_OPEN_ORDERS": "0",
}


class Message:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset = topic, 0, offset
        self.key: bytes | None = None
        self.value = value


class Event:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self.value = value
        self.message = Message(topic, offset, value)


class Topics:
    """The decisions topic and the lane retry topic, read as the lanes agent's one stream; the
    runner's `retries` sends land back in it, as through Kafka."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.offsets = {"decisions": 0, "retries": 0}
        self.acked: list[Event] = []
        self.retried: list[AccountDecision] = []
        self.on_retry: list[Any] = []  # checks run at every send

    def put(self, topic: str, value: bytes) -> None:
        self.offsets[topic] += 1
        self.queue.put_nowait(Event(topic, self.offsets[topic], value))

    def noack(self) -> Topics:
        return self

    async def events(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    async def ack(self, event: Event) -> bool:
        self.acked.append(event)
        return True

    async def send(self, *, key: bytes | None, value: bytes) -> None:  # the retry topic
        for check in self.on_retry:
            check()
        self.retried.append(decode_decision(value))
        self.put("retries", value)


class GatedBroker(FakeBroker):
    """Hangs every POST until `gate` opens (a slow broker fills the account)."""

    def __init__(self, journal: Journal) -> None:
        super().__init__(journal)
        self.gate = asyncio.Event()
        self.sent: list[str] = []

    async def submit_order(self, plan: OrderPlan) -> dict[str, Any]:
        await self.gate.wait()
        self.sent.append(plan.client_order_id)
        return await super().submit_order(plan)


class Control:
    def __init__(self) -> None:
        self.caught_up = asyncio.Event()
        self.caught_up.set()


class World:
    def __init__(self, tmp_path: Path, waits: dict[str, str] | None = None) -> None:
        settings = Settings(TORGHUT_DATA_DIR=str(tmp_path), **SETTINGS)  # type: ignore[arg-type]
        journal, self.clock = Journal(), Clock()
        self.ledger = MemoryLedger(journal)
        registry = AccountRegistry(accounts=(account("alpha"), account("beta")), source="test")
        self.waits = waits or {}
        self.service = LaneService(
            settings,
            registry,
            ledger=self.ledger,
            index=MemoryIndex(),
            cursors=MemoryCursors(),
            sink=MemorySink(journal),  # type: ignore[arg-type]
            brokers=BrokerPool(settings),
            flags=flags,
            book=KillSwitchBook(),
            board=StatusBoard(clock=self.clock),
            clock=self.clock,
            lane_waits=self.waits.get,
        )
        self.brokers = {label: GatedBroker(journal) for label in ("alpha", "beta")}
        for label, lane in self.service.lanes.items():
            lane.broker = self.brokers[label]
        self.brokers["beta"].gate.set()
        self.topics = Topics()
        self.runner = LanesRunner(
            self.service,
            ledger=self.ledger,  # type: ignore[arg-type]
            acks=ChangelogAcks(),
            control=Control(),  # type: ignore[arg-type]
            dead_letters=DeadLetters(None, "test"),  # type: ignore[arg-type]
            retries=self.topics,  # type: ignore[arg-type]
            owned_accounts=lambda: {"alpha", "beta"},
        )

    def send(self, *decisions: AccountDecision) -> None:
        for d in decisions:
            self.topics.put("decisions", encode_decision(d))

    async def until(self, check: Any, what: str) -> None:
        """`check()` becomes true without the clock moving (no hold can expire)."""
        for _ in range(2000):
            if check():
                return
            await asyncio.sleep(0)
        raise AssertionError(f"never happened: {what}")


def burst(n: int, label: str = "alpha") -> list[AccountDecision]:
    return [
        make_decision(
            account=label, symbol=f"S{i:03d}", event_ts=T0 + timedelta(milliseconds=i)
        ).model_copy(update={"notional": Decimal(100)})
        for i in range(n)
    ]


async def test_a_burst_is_re_driven_as_room_frees_up_first_in_first_out(tmp_path: Path) -> None:
    w = World(tmp_path)
    alpha, beta = burst(40), burst(3, "beta")
    w.send(*alpha[:20], *beta, *alpha[20:])
    lane = w.service.lanes["alpha"]
    violations: list[str] = []

    def room_kept() -> None:  # at every re-drive sent: never more on their way than free slots
        dispatcher = w.runner._dispatcher
        assert dispatcher is not None
        if lane.backlog.in_flight > dispatcher.room("alpha"):
            violations.append(
                f"{lane.backlog.in_flight} in flight, room {dispatcher.room('alpha')}"
            )

    w.topics.on_retry.append(room_kept)
    run = asyncio.create_task(w.runner.run(w.topics))  # type: ignore[arg-type]
    try:
        # The broker hangs: alpha is full (16 taken), the other 24 are deferred, beta trades.
        await w.until(lambda: len(w.brokers["beta"].sent) == 3, "beta's orders")
        await w.until(lambda: len(lane.backlog) == 24, "alpha's deferrals")
        entries = [w.ledger.get(ledger_key("alpha", d.decision_hash)) for d in alpha[16:]]
        assert all(e is not None and e.last_error == DEFERRED for e in entries)
        assert all(e is not None and e.state is LedgerState.received for e in entries)
        for _ in range(3):  # a full account: nothing goes round the retry topic
            assert await w.runner.redrive() == 0
        assert w.topics.retried == [] and lane.parked == {}

        w.brokers["alpha"].gate.set()
        await w.until(lambda: len(w.brokers["alpha"].sent) == 40, "alpha's 40 orders")
        await w.until(lambda: len(w.topics.acked) == 43 + 24, "every record acked")
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)

    assert violations == []
    hashes = [d.decision_hash for d in alpha]
    assert w.brokers["alpha"].sent == hashes  # one order each, in the order they were read
    assert [d.decision_hash for d in w.topics.retried] == hashes[16:]  # each deferred one once
    counts = lane.status.snapshot()["counts"]
    assert counts["deferrals"] == 24 and counts["deferred_again"] == 0
    assert counts["redrives"] == {"deferred": 24, "parked": 0}  # no held round
    assert w.clock() == T0  # finished without any hold expiring
    assert len(lane.backlog) == 0 and lane.backlog.in_flight == 0
    w.service.watch_controls({"alpha", "beta"})  # the lanes upkeep tick
    assert lane.status.snapshot()["backlog"] == 0
    assert w.service.lanes["beta"].status.snapshot()["counts"]["deferrals"] == 0


async def test_a_decision_re_driven_twice_gives_one_order(tmp_path: Path) -> None:
    w = World(tmp_path)
    alpha = burst(20)
    w.send(*alpha)
    run = asyncio.create_task(w.runner.run(w.topics))  # type: ignore[arg-type]
    try:
        await w.until(lambda: len(w.service.lanes["alpha"].backlog) == 4, "4 deferred")
        twice = alpha[17]
        w.topics.put("retries", encode_decision(twice))  # e.g. an earlier owner's re-drive
        w.topics.put("retries", encode_decision(twice))
        w.brokers["alpha"].gate.set()
        await w.until(lambda: len(w.brokers["alpha"].sent) == 20, "20 orders")
        for _ in range(50):
            await asyncio.sleep(0)
    finally:
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
    assert sorted(w.brokers["alpha"].sent) == sorted(d.decision_hash for d in alpha)
    assert w.brokers["alpha"].calls.count("submit") == 20
    entry = w.ledger.get(ledger_key("alpha", alpha[17].decision_hash))
    assert entry is not None and entry.state is LedgerState.submitted


async def test_a_lane_that_must_wait_or_backs_off_keeps_its_backlog_until_it_may_trade(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    lane = w.service.lanes["alpha"]
    for d in burst(3):
        assert w.service.admit(d, full=True) is False
        await w.service.defer(d)
    w.runner._dispatcher = _Room()  # type: ignore[assignment]
    w.waits["alpha"] = "start-up reconciliation"
    assert await w.runner.redrive() == 0 and len(lane.backlog) == 3
    del w.waits["alpha"]
    until = lane.circuit.fail(w.clock())  # backing off after broker errors: the same
    assert await w.runner.redrive() == 0 and len(lane.backlog) == 3
    w.clock.now = until
    assert await w.runner.redrive() == 3
    assert w.topics.retried and lane.status.snapshot()["counts"]["redrives"]["deferred"] == 3


class _Room:
    def room(self, key: object) -> int:
        return MAX_PER_ACCOUNT


def test_resume_puts_deferred_decisions_back_in_order_and_the_rest_on_their_hold(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    lane = w.service.lanes["alpha"]
    lane.backlog.ready("from-before-the-rebalance")
    older, newer = burst(2)
    late = received(newer, T0 + timedelta(seconds=1)).parked(T0, DEFERRED, T0)
    early = received(older, T0).parked(T0, DEFERRED, T0)
    trouble = received(make_decision(symbol="MSFT"), T0).parked(T0, "broker: timeout", T0)
    foreign = received(make_decision(account="gamma"), T0).parked(T0, DEFERRED, T0)
    for e in (late, early, trouble):
        w.ledger.rows[e.key] = e
    scan = LedgerScan(sizes={"alpha": 3}, unfinished=[late, trouble, foreign, early])
    assert w.service.resume(scan) == 3
    assert lane.backlog.hashes() == [older.decision_hash, newer.decision_hash]
    assert list(lane.parked) == [trouble.decision_hash]
    assert [d.decision_hash for d in w.service.due_retries()] == [trouble.decision_hash]
    out = w.service.redrive(lambda label: 1, ["alpha"])
    assert [d.decision_hash for d in out] == [older.decision_hash]  # room for one
    assert w.service.redrive(lambda label: 1, ["alpha"]) == []  # it is on its way
    w.clock.advance(RETRY_HOLD.total_seconds())
    assert [d.decision_hash for d in w.service.redrive(lambda label: 1, ["alpha"])] == [
        older.decision_hash
    ]  # never read back: taken for lost


def test_a_deferred_decision_finished_meanwhile_is_not_re_driven(tmp_path: Path) -> None:
    w = World(tmp_path)
    lane = w.service.lanes["alpha"]
    d = burst(1)[0]
    lane.backlog.ready(d.decision_hash)
    w.ledger.rows[ledger_key("alpha", d.decision_hash)] = (
        received(d, T0).rejected(("decision_stale",), T0).marked_persisted()
    )
    assert w.service.redrive(lambda label: 16, ["alpha", "beta"]) == []
    assert len(lane.backlog) == 0
