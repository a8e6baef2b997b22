"""The lanes of one worker: built from the account registry, driven by the lanes agent and timers.

Faust-free: the agents pass in what they know of faust (owned accounts, ledger scans) and send
the decisions `due_retries` returns to the lane retry topic. One lane per enabled account; each
lane has its own broker client, thread pool, request budget, backoff and status, so nothing one
account does (bad credentials, a hanging broker, a poison decision) touches another's state.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from schemas.decision import AccountDecision
from streams.broker.errors import BrokerError
from streams.broker.pool import BrokerPool
from streams.domain.accounts import AccountRegistry
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.ledger import LedgerEntry, LedgerScan, LedgerState, Step, ledger_key
from streams.domain.pretrade import PretradeLimits
from streams.domain.risk import RiskPolicy
from streams.domain.sizing import AccountSnapshot
from streams.domain.trading_state import TradingStateBook
from streams.execution.control_actions import ActionBroker, Audit, ControlActions
from streams.execution.crash import CrashPoints
from streams.execution.cursor import LaneCursor
from streams.execution.lane import DEFERRED, Lane, LaneEnv, Ledger, OrderIndex, utc_now
from streams.execution.order_guard import OrderGuard
from streams.execution.persist import LaneSink
from streams.flags import ALL_KEYS, KILL_SWITCH, FlagSnapshot
from streams.observability.status import StatusBoard
from streams.settings import Settings

log = logging.getLogger(__name__)

# A re-driven decision is not handed out again before this (unless its lane took it up meanwhile):
# the retry time of a parked decision is a backoff, and its re-drive may be read back only after
# the lane has worked through what it had; a deferred one's re-drive not read back by then is
# taken for lost.
RETRY_HOLD = timedelta(seconds=30)


class Cursors(Protocol):
    """The lane cursor table, as the service uses it (see tables/lane_cursors.py)."""

    @property
    def source(self) -> str: ...

    def get(self, account_label: str) -> LaneCursor | None: ...

    def advance(self, account_label: str, cursor: LaneCursor) -> bool: ...


class LaneService:
    def __init__(
        self,
        settings: Settings,
        registry: AccountRegistry,
        *,
        ledger: Ledger,
        index: OrderIndex,
        cursors: Cursors,
        sink: LaneSink,
        brokers: BrokerPool,
        flags: Callable[[], FlagSnapshot],
        book: KillSwitchBook,
        board: StatusBoard,
        disabled_strategies: frozenset[str] = frozenset(),
        ta_blocks_orders: Callable[[str, datetime], bool] = lambda symbol, now: False,
        lane_refusals: Callable[[str], list[str]] = lambda label: [],
        lane_waits: Callable[[str], str | None] = lambda label: None,
        clock: Callable[[], datetime] = utc_now,
        states: TradingStateBook | None = None,
        audit: Audit | None = None,
        guard: OrderGuard | None = None,
    ) -> None:
        self.settings = settings
        self.cursors = cursors
        self.sink = sink
        self.book = book
        self.flags = flags
        self.clock = clock
        self.states = states if states is not None else TradingStateBook()
        self.guard = guard or OrderGuard(
            self.states,
            PretradeLimits.from_settings(settings),
            overrides={a.label: a.limits.overrides() for a in registry.accounts},
        )
        self.actions: ControlActions | None = None
        if audit is not None:
            self.actions = ControlActions(
                book,
                self.states,
                audit,
                suspend_mirror=settings.kill_switch_broker_suspend,
                cancel_on_engage=settings.kill_switch_cancel_open_orders,
            )
        self.env = LaneEnv(
            ledger=ledger,
            index=index,
            sink=sink,
            policy=RiskPolicy.from_settings(settings),
            flags=flags,
            kill_command=book.engaged_for,
            strategy_enabled=lambda strategy_id: strategy_id not in disabled_strategies,
            crash=CrashPoints(settings.crash_at, settings.data_path),
            clock=clock,
            ta_blocks_orders=ta_blocks_orders,
            lane_refusals=lane_refusals,
            order_refusals=self.guard.refusals,
            order_sent=self.guard.sent,
            lane_waits=lane_waits,
        )
        self.known_accounts = frozenset(registry.labels)  # enabled or not
        self.lanes: dict[str, Lane] = {}
        self._brokers: dict[str, ActionBroker] = {}
        for account in registry.enabled():
            status = board.lane(account.label)
            status.configure(mode=account.mode.value, enabled=True)
            broker = brokers.for_account(account)
            self._brokers[account.label] = broker
            lane = Lane(account, broker, self.env, status)
            cap = account.limits.max_notional_per_order
            if cap is not None:  # the registry overrides TRADING_MAX_NOTIONAL_PER_ORDER
                lane.sizing = replace(
                    self.env.policy.sizing, max_notional_per_order=Decimal(str(cap))
                )
            self.lanes[account.label] = lane
        self._engaged: dict[str, bool] = {}
        self._dirty_cursors: set[str] = set()
        self._tasks: set[asyncio.Task[object]] = set()

    def lane(self, account_label: str) -> Lane | None:
        return self.lanes.get(account_label)

    def verified(self, account_label: str) -> bool:
        """Whether the lane's keys were checked against the label's pinned broker account."""
        lane = self.lanes.get(account_label)
        return lane is not None and lane.verified_account is not None and lane.mismatch is None

    def mismatched(self, account_label: str) -> bool:
        """Whether the lane's keys reach another broker account than the label's pin."""
        lane = self.lanes.get(account_label)
        return lane is not None and lane.mismatch is not None

    # ---- the lanes agent
    async def handle(
        self,
        decision: AccountDecision,
        consumed_at: float,
        proceed: Callable[[], None] = lambda: None,
    ) -> LedgerEntry | None:
        """One decision (new, redelivered or re-driven) for its lane; None if there is no lane.
        `proceed` is called once the lane's next decision may start (see `Lane.handle`)."""
        lane = self.lanes.get(decision.account_label)
        if lane is None:
            return None
        entry = await lane.handle(decision, consumed_at, proceed)
        if self.cursors.advance(lane.label, LaneCursor.of(decision)):
            self._dirty_cursors.add(lane.label)
        return entry

    async def defer(self, decision: AccountDecision) -> None:
        """Park a decision its lane has no room for now (see `LanesRunner.defer`)."""
        lane = self.lanes.get(decision.account_label)
        if lane is not None:
            await lane.defer(decision)

    # ---- re-driving (the lanes runner sends what these return to the lane retry topic)
    def admit(self, decision: AccountDecision, full: bool) -> bool:
        """A decision was read for its lane, `full` when the lane has no free slot: whether it
        takes a slot now (True) or is deferred (False: `defer` records it, and `redrive` hands
        it out when the lane has room; see streams/execution/backlog.py)."""
        lane = self.lanes.get(decision.account_label)
        if lane is None:
            return not full
        return lane.backlog.admit(decision.decision_hash, full)

    def backlogged(self) -> bool:
        """Whether any lane has deferred decisions waiting for room."""
        return any(len(lane.backlog) for lane in self.lanes.values())

    def redrive(self, room: Callable[[str], int], owned: Iterable[str]) -> list[AccountDecision]:
        """Deferred decisions of the owned lanes to re-drive now, oldest first, at most as many
        per lane as `room(label)` (its free slots) minus its re-drives still on their way. A
        lane that must wait (start-up reconciliation) or backs off after broker errors keeps its
        backlog until it may trade again (re-driven now, they would only be parked)."""
        now = self.clock()
        out: list[AccountDecision] = []
        for label in owned:
            lane = self.lanes.get(label)
            if lane is None or not len(lane.backlog) or lane.circuit.active(now):
                continue
            if self.env.lane_waits(label) is not None:
                continue
            backlog = lane.backlog
            sent = 0
            for decision_hash in backlog.due(room(label), now, RETRY_HOLD):
                entry = self.env.ledger.get(ledger_key(label, decision_hash))
                if entry is None or entry.step is Step.done:
                    backlog.discard(decision_hash)
                    continue
                out.append(entry.decision)
                sent += 1
            lane.status.record_redrives(
                "deferred", sent, backlog=len(backlog), deferred_again=backlog.deferred_again
            )
        return out

    def unsent(self, decision: AccountDecision) -> None:
        """A re-drive `redrive` handed out could not be sent: it waits again, at its place."""
        lane = self.lanes.get(decision.account_label)
        if lane is not None:
            lane.backlog.unsent(decision.decision_hash)

    def due_retries(self) -> list[AccountDecision]:
        """Parked decisions (broker, database or storage trouble, a lane that must wait) whose
        retry time came; each is then held `RETRY_HOLD` before it is handed out again, unless
        its lane takes it up meanwhile. Deferred decisions are not here: see `redrive`."""
        now = self.clock()
        due: list[AccountDecision] = []
        for lane in self.lanes.values():
            sent = 0
            for decision_hash in lane.due(now, RETRY_HOLD):
                entry = self.env.ledger.get(ledger_key(lane.label, decision_hash))
                if entry is None or entry.step is Step.done:
                    lane.parked.pop(decision_hash, None)
                    continue
                due.append(entry.decision)
                sent += 1
            if sent:
                lane.status.record_redrives(
                    "parked",
                    sent,
                    backlog=len(lane.backlog),
                    deferred_again=lane.backlog.deferred_again,
                )
        return due

    def resume(self, scan: LedgerScan) -> int:
        """After a start or rebalance: every unfinished entry this worker holds is re-driven
        (and entries of partitions it no longer holds are forgotten). Decisions deferred for
        lack of room go back to their lane's backlog, oldest first (re-driven as it has room);
        the others are due now."""
        now = self.clock()
        for label, lane in self.lanes.items():
            lane.parked.clear()
            lane.backlog.clear()
            # A lane that (re)gains ownership sizes from a fresh snapshot: orders placed while
            # another worker ran it are not in the one this worker kept.
            lane.snapshot = None
            lane.status.set_ledger_size(scan.sizes.get(label, 0))
        resumed = 0
        deferred: list[LedgerEntry] = []
        for entry in scan.unfinished:
            owner = self.lanes.get(entry.account_label)
            if owner is None:
                continue
            resumed += 1
            if entry.state is LedgerState.received and entry.last_error == DEFERRED:
                deferred.append(entry)
            else:
                owner.parked[entry.decision_hash] = now
        deferred.sort(key=lambda e: (e.received_at, e.decision.event_ts, e.decision_hash))
        for entry in deferred:
            self.lanes[entry.account_label].backlog.ready(entry.decision_hash)
        if resumed:
            log.info(
                "re-driving %d unfinished ledger entries (%d deferred: as their lanes have room)",
                resumed,
                len(deferred),
            )
        return resumed

    def release(self, account_label: str) -> int:
        """The lane may trade now (its start-up reconciliation is done): every decision it
        parked becomes due at once (re-driven through the retry topic by the next upkeep)."""
        lane = self.lanes.get(account_label)
        if lane is None:
            return 0
        now = self.clock()
        for decision_hash in lane.parked:
            lane.parked[decision_hash] = now
        return len(lane.parked)

    # ---- timers
    async def refresh_snapshots(self, owned: Iterable[str]) -> dict[str, AccountSnapshot | None]:
        """Refresh the owned lanes' account snapshots concurrently; one failure stays its own."""
        lanes = [self.lanes[label] for label in owned if label in self.lanes]
        results = await asyncio.gather(*(self._refresh(lane) for lane in lanes))
        return {lane.label: snap for lane, snap in zip(lanes, results, strict=True)}

    async def _refresh(self, lane: Lane) -> AccountSnapshot | None:
        if lane.auth.active(self.clock()):
            return None  # bad credentials: probe again only after the lane's backoff
        try:
            snapshot = await lane.refresh_snapshot()
        except BrokerError as exc:
            log.warning("account snapshot failed", extra={"account": lane.label, "error": str(exc)})
            return None
        if self.guard.limits_for(lane.label).max_open_orders > 0:
            await self._count_open_orders(lane)
        return snapshot

    async def _count_open_orders(self, lane: Lane) -> None:
        """The broker's open orders of the account (`TRADING_MAX_OPEN_ORDERS` counts from it)."""
        counted_at = self.clock()
        broker = self._brokers[lane.label]
        try:
            orders = await broker.list_orders("open")
        except BrokerError as exc:
            log.warning("open orders not counted", extra={"account": lane.label, "error": str(exc)})
            return
        self.guard.set_open_orders(lane.label, len(orders), counted_at)

    async def mirror_cursors(self) -> None:
        """Copy changed lane cursors to Postgres `trade_cursor`."""
        dirty, self._dirty_cursors = self._dirty_cursors, set()
        for label in sorted(dirty):
            cursor = self.cursors.get(label)
            if cursor is None:
                continue
            try:
                await self.sink.cursor(self.cursors.source, label, cursor)
            except Exception as exc:  # noqa: BLE001 - mirrored again next time
                self._dirty_cursors.add(label)
                log.warning("cursor mirror failed: %s", type(exc).__name__)
            else:
                self.lanes[label].status.set_cursor(cursor.model_dump(mode="json"))

    def kill_reason(self, label: str, flags: FlagSnapshot) -> str | None:
        """Why the lane's kill switch is engaged (env, control topic, flag), or None."""
        if self.settings.kill_switch_enabled:
            return "TRADING_KILL_SWITCH_ENABLED"
        command = self.book.engaged_for(label)
        if command is not None:
            return f"control ({command.scope}): {command.reason}"
        if flags.lane_available(label) and flags.is_on(KILL_SWITCH, label):
            return f"flag {KILL_SWITCH}"
        return None

    def watch_controls(self, owned: set[str]) -> None:
        """Show flags, kill switches and backlogs on each lane's status; cancel open orders on
        engage."""
        flags = self.flags()
        for label, lane in self.lanes.items():
            lane.status.set_flags(
                {key: flags.is_on(key, label) for key in ALL_KEYS}, flags.lane_available(label)
            )
            reason = self.kill_reason(label, flags)
            lane.status.set_kill_switch(reason is not None, reason)
            lane.status.set_trading_state(self.states.effective(label).as_dict())
            lane.status.set_backlog(len(lane.backlog), lane.backlog.deferred_again)
            engaged, was = reason is not None, self._engaged.get(label, False)
            self._engaged[label] = engaged
            if label not in owned:
                continue
            if self.actions is not None:  # control commands: audited and acted on once
                self.actions.watch(label, self._brokers[label], lane.status)
            by_control = self.actions is not None and self.book.engaged_for(label) is not None
            if engaged and not was and not by_control:
                self._maybe_cancel(lane, reason or "")

    def _maybe_cancel(self, lane: Lane, reason: str) -> None:
        if not self.settings.kill_switch_cancel_open_orders:
            return
        task: asyncio.Task[object] = asyncio.create_task(self._cancel(lane, reason))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _cancel(self, lane: Lane, reason: str) -> object:
        try:
            return await lane.cancel_open_orders(reason)
        except BrokerError as exc:
            lane.status.record_error(exc.kind.value, f"cancel open orders: {exc}")
            return None

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.actions is not None:
            await self.actions.close()
        await self.sink.close()
