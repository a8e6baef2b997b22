"""Lane orchestration: reading decisions, dispatching them to the lanes, resume and re-drive.

The lanes agent (`agents/lanes.py`) hands its stream to `LanesRunner.run`; its timers call
`upkeep` and `refresh_snapshots`.

One actor per worker (the agent's concurrency=1, and no `isolated_partitions`: that would run one
actor per *topic* partition, and a decision on the decisions topic and its re-drive on the retry
topic would then race) reads decisions in partition order. Inside the actor, the decisions of
different accounts run concurrently and each account's strictly in order (`KeyedDispatcher`, keyed
by account label): one writer per account ledger, and a fan-out of one intent to K accounts is not
taken one account after another. The stream does not ack by itself (`noack`): an event is acked
once its decision and every decision read before it are taken, so an offset never becomes
committable ahead of an unfinished decision. Isolation between accounts comes from the lane never
waiting: each broker call is bounded by its timeout, nothing retries in place (parked decisions
are re-driven through the retry topic), and a lane in backoff makes no broker call at all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

import faust

from schemas.codecs import DecodeError, decode_decision, encode_decision
from schemas.decision import AccountDecision
from streams.compat import run_as_event
from streams.dlq import DeadLetters
from streams.domain.ledger import LedgerScan
from streams.errors import exit_worker, guarded
from streams.execution.control_feed import ControlFeed
from streams.execution.dispatch import KeyedDispatcher
from streams.execution.service import LaneService
from tables.durable import ChangelogAcks

log = logging.getLogger(__name__)

CURSOR_MIRROR_EVERY = 5  # upkeep ticks
MAX_UNACKED = 256  # decisions read but not yet acked (a slow account holds back at most these)
# Unfinished decisions of one account before the reader waits (and with it every account). Small
# enough that a rebalance (which waits for unacked messages) is not held by a long backlog; large
# enough that two intents close together do not block the reader: bench B3 p99 @500/s was 2.7 s
# with 2, 0.47 s with 16 (head-of-line blocking).
MAX_PER_ACCOUNT = 16


class LedgerScanner(Protocol):
    def scan(self) -> LedgerScan: ...


class ReadDecision:
    """An event as read by the agent: its decision, or why it has none."""

    def __init__(self, event: faust.EventT[bytes]) -> None:
        self.event = event
        self.consumed_at = time.perf_counter()
        self.decision: AccountDecision | None = None
        self.error: DecodeError | None = None

    @classmethod
    def of(cls, event: faust.EventT[bytes]) -> ReadDecision:
        read = cls(event)
        try:
            read.decision = decode_decision(event.value)
        except DecodeError as exc:
            read.error = exc
        return read

    @property
    def account_label(self) -> str:
        """The dispatch key: undecodable events share one (empty) key."""
        return self.decision.account_label if self.decision is not None else ""


class LanesRunner:
    """Drives the worker's `LaneService` from the lanes agent and its timers."""

    def __init__(
        self,
        service: LaneService,
        *,
        ledger: LedgerScanner,
        acks: ChangelogAcks,
        control: ControlFeed,
        dead_letters: DeadLetters,
        retries: faust.TopicT,
        owned_accounts: Callable[[], set[str]],
        reconcile_lanes: Callable[[set[str], bool], None] = lambda owned, resumed: None,
    ) -> None:
        self.service = service
        self._ledger = ledger
        self._acks = acks
        self._control = control
        self._dead_letters = dead_letters
        self._retries = retries
        self._owned = owned_accounts
        # Start-up reconciliation of the lanes owned now (all again after a resume).
        self._reconcile_lanes = reconcile_lanes
        self._ticks = 0
        self._resume_pending = False
        self._dispatcher: KeyedDispatcher[ReadDecision] | None = None
        self._redrive_wanted = asyncio.Event()  # a slot freed up, a deferral landed, a tick

    # ---- the agent
    async def run(self, stream: faust.StreamT[bytes]) -> None:
        """Account decisions (and re-driven ones) → each account's lane, acked in read order."""
        await self._control.caught_up.wait()  # never trade through a kill switch not yet read
        # Acked by the dispatcher, in order, once taken (`noack` is not on StreamT).
        manual: faust.StreamT[bytes] = cast(Any, stream).noack()
        dispatcher: KeyedDispatcher[ReadDecision] = KeyedDispatcher(
            self.take,
            lambda read: manual.ack(read.event),
            max_pending=MAX_UNACKED,
            max_per_key=MAX_PER_ACCOUNT,
            overflow=self.defer,
            admit=self._admit,
            on_done=lambda key: self._redrive_wanted.set(),
        )
        self._dispatcher = dispatcher
        redriver = asyncio.create_task(self._redrive_loop(), name="lanes-redrive")
        try:
            async for event in manual.events():
                read = ReadDecision.of(event)
                message = event.message
                partition = (message.topic, message.partition)  # acks are ordered per partition
                await dispatcher.submit(read.account_label, read, partition)
        except Exception as exc:  # noqa: BLE001 - see below
            # Restarting the actor in-process lets faust commit past the unfinished decision
            # (its commit arithmetic, faust-streaming #606): only a process restart is safe.
            dispatcher.close()
            exit_worker(f"lanes_dispatcher_failed: {type(exc).__name__}: {exc}")
        finally:
            redriver.cancel()
            self._dispatcher = None
            dispatcher.close()

    def _admit(self, key: object, read: ReadDecision, full: bool) -> bool:
        """Whether a decision read now takes a slot of its account (else it is deferred)."""
        decision = read.decision
        if decision is None:
            return not full  # a dead letter: nothing to keep in order
        return self.service.admit(decision, full)

    # ---- re-driving deferred decisions
    async def _redrive_loop(self) -> None:
        """Re-drive deferred decisions whenever a slot may have freed up (or at a tick)."""
        while True:
            await self._redrive_wanted.wait()
            self._redrive_wanted.clear()
            await guarded("lanes-redrive", self.redrive)

    async def redrive(self) -> int:
        """Send each owned account's oldest deferred decisions to the retry topic, as many as
        it has free slots (minus its re-drives still on their way); the number sent."""
        dispatcher = self._dispatcher
        if dispatcher is None or not self.service.backlogged():
            return 0
        due = self.service.redrive(dispatcher.room, self._owned())
        for n, decision in enumerate(due):
            try:
                await self._retries.send(
                    key=decision.account_label.encode(), value=encode_decision(decision)
                )
            except Exception:
                for unsent in due[n:]:  # they wait again, at their places
                    self.service.unsent(unsent)
                raise
        return len(due)

    async def defer(self, read: ReadDecision) -> None:
        """The account has `MAX_PER_ACCOUNT` decisions unfinished (a slow or hanging broker), or
        older decisions deferred: instead of making the reader (and every other account) wait,
        the decision is parked durably in its ledger, waits in the lane's backlog and is
        re-driven through the retry topic as the account has room (`redrive`)."""
        decision = read.decision
        if decision is None or self.service.lane(decision.account_label) is None:
            await self.take(read)  # a dead letter: nothing to wait for
            return
        run_as_event(read.event)
        self._acks.open_scope()
        try:
            await self.service.defer(decision)
        except Exception as exc:  # noqa: BLE001 - not durable: acking it would lose it
            exit_worker(f"lane_defer_failed: {decision.account_label}: {type(exc).__name__}: {exc}")

    async def take(self, read: ReadDecision, proceed: Callable[[], None] = lambda: None) -> None:
        """In the decision's own task: its table writes go to its event's changelog partition,
        and its durable writes are awaited apart from other accounts' (see tables/durable.py).
        `proceed` lets the account's next decision start (the lane calls it once the broker
        answered; the dispatcher also does when this returns)."""
        event = read.event
        run_as_event(event)
        self._acks.open_scope()
        decision = read.decision
        if decision is None:
            assert read.error is not None
            await self._dead_letters.event(event, read.error.reason, read.error)
            return
        if self.service.lane(decision.account_label) is None:
            # Never a row or an order under a label the registry does not know.
            known = decision.account_label in self.service.known_accounts
            reason = "account_not_enabled" if known else "unknown_account"
            await self._dead_letters.event(event, reason, decision.account_label)
            return
        # The lane settles every failure of a decision itself; what escapes is the ledger (Kafka)
        # failing. Acking it would lose the decision, retrying it in-process is unsafe (see
        # `run`): the worker stops now, this event unacked.
        try:
            await self.service.handle(decision, read.consumed_at, proceed)
        except Exception as exc:  # noqa: BLE001 - see above
            exit_worker(f"lane_failed: {decision.account_label}: {type(exc).__name__}: {exc}")

    # ---- rebalance and timers
    def tables_recovered(self) -> None:
        """After every recovery (start, rebalance) the ledger is scanned for unfinished entries."""
        self._resume_pending = True

    async def upkeep(self) -> None:
        """Re-drive parked decisions, resume after a rebalance, show controls, mirror cursors."""
        service = self.service
        resumed = self._resume_pending
        if resumed:
            self._resume_pending = False
            service.resume(self._ledger.scan())
        self._reconcile_lanes(self._owned(), resumed)
        for decision in service.due_retries():
            await self._retries.send(
                key=decision.account_label.encode(), value=encode_decision(decision)
            )
        self._redrive_wanted.set()  # a rebuilt backlog, a lane that may trade now, lost re-drives
        service.watch_controls(self._owned())
        self._ticks += 1
        if self._ticks % CURSOR_MIRROR_EVERY == 0:
            await service.mirror_cursors()

    async def refresh_snapshots(self) -> None:
        """Equity, buying power and positions of the lanes this worker owns."""
        await self.service.refresh_snapshots(self._owned())

    async def close(self) -> None:
        await self.service.close()
