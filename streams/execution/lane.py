"""One execution lane: one account's decisions → risk → ledger → broker → Postgres.

The submit path, with the ledger written before every side effect:

    received ──(risk, sizing)──▶ planned ──[controls]──▶ submitting (durable) ‖ decision row
        ──[controls]──POST──▶ submitted ──(execution row)──▶ submitted, persisted (one write)

`planned` lives in memory only (a crash before `submitting` redelivers the decision, and it is
planned again); the decision row and the durable `submitting` are written at the same time, and
nothing is sent unless both succeeded. Once the broker has answered, the account's next decision
may start (`Attempt.proceed`): the rows and the `submitted` entry are this decision's own
bookkeeping, and its offset is acked only after them.

Nothing here loops or sleeps for one account: a broker call is bounded by its timeout, and an
outcome that cannot be settled now (ambiguous POST, broker or database down, backoff) parks the
entry with a `retry_at`; the lane service re-drives it later through the lane retry topic (a
decision deferred because the lane was full waits in its `backlog` instead, see backlog.py). An
ambiguous POST (timeout, connection error, 5xx, 504) is followed by one immediate lookup by
client order id; an entry found in `submitting` (redelivered, re-driven) is always looked up
before it is submitted again. The broker's duplicate-client-id answer is the last line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from schemas.control import ControlCommand
from schemas.decision import AccountDecision
from streams.broker.errors import BrokerError, ErrorClass
from streams.domain.accounts import Account
from streams.domain.ledger import (
    LedgerEntry,
    LedgerState,
    Step,
    ledger_key,
    received,
    signal_slot,
)
from streams.domain.risk import (
    STALE,
    TA_STALE,
    FlagView,
    LaneContext,
    RiskPolicy,
    control_reasons,
    gate_reasons,
    is_stale,
)
from streams.domain.sizing import AccountSnapshot, OrderPlan, SizingLimits, size_order
from streams.errors import is_poison, reason_code
from streams.execution.backlog import Backlog
from streams.execution.crash import CrashPoints
from streams.observability.metrics import PERSIST_QUARANTINED, SLOT_CONFLICTS
from streams.observability.status import LaneStatus

log = logging.getLogger(__name__)

UNAUTHORIZED = "broker_unauthorized"
DUPLICATE_SIGNAL_DECISION = "duplicate_signal_decision"
ACCOUNT_MISMATCH = "account_mismatch"
PERSIST_FAILED = "persist_failed"  # persist_failed:<sqlstate>: Postgres refused the decision's row
DURABLE_TIMEOUT_SECONDS = 10.0  # longest wait for a ledger write to be acknowledged by Kafka
MAX_STEPS = 8  # a pass makes at most plan, persist, submit, persist: bounded by construction
SNAPSHOT_MAX_AGE = timedelta(minutes=15)  # older than this, refresh before sizing
WAIT_RETRY = timedelta(seconds=5)  # a decision parked by `lane_waits` is tried again after this
DEFERRED = "lane busy: deferred"  # the ledger's `last_error` of a decision parked for lack of room
DEFERRAL_TIMEOUT_SECONDS = 180.0  # longest wait for a deferral to be durable before the exit


class DeferralNotDurable(RuntimeError):
    """A deferred decision's ledger entry was not acknowledged in time: its offset must not be
    acked, and retrying in-process is unsafe; the worker exits and the decision is read again."""


# Definitive answers about one order: the decision is rejected with the broker's code.
REFUSALS = frozenset(
    {ErrorClass.insufficient, ErrorClass.rejected, ErrorClass.forbidden, ErrorClass.not_found}
)


class Broker(Protocol):
    async def submit_order(self, plan: OrderPlan) -> dict[str, Any]: ...

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None: ...

    async def account(self) -> dict[str, Any]: ...

    async def positions(self) -> list[dict[str, Any]]: ...

    async def cancel_open_orders(self) -> list[dict[str, Any]]: ...


class Ledger(Protocol):
    def get(self, key: str) -> LedgerEntry | None: ...

    async def put(self, entry: LedgerEntry, *, durable: bool = True) -> None: ...

    def slot_owner(self, account_label: str, slot: str) -> str | None: ...

    def take_slot(self, account_label: str, slot: str, decision_hash: str) -> None: ...


class OrderIndex(Protocol):
    def remember(
        self,
        account_label: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> None: ...


class Sink(Protocol):
    async def persist(self, entry: LedgerEntry) -> None: ...

    async def snapshot(
        self, snapshot: AccountSnapshot, positions: list[dict[str, Any]]
    ) -> None: ...

    async def pin_account(self, account_label: str, account_number: str) -> str:
        """Record `account_number` for the label unless one is recorded; the recorded one."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Attempt:
    """One pass of a decision through its lane: when it was read, and how to let the account's
    next decision start once the broker has answered (the rest is this decision's bookkeeping)."""

    started: float
    proceed: Callable[[], None] = _nothing


@dataclass
class Backoff:
    """Exponential backoff after consecutive failures: `base`, 2 * base, ... up to `cap` seconds."""

    base: float
    cap: float
    failures: int = 0
    until: datetime | None = None

    def fail(self, now: datetime) -> datetime:
        self.failures += 1
        delay = min(self.cap, self.base * 2 ** (self.failures - 1))
        self.until = now + timedelta(seconds=delay)
        return self.until

    def ok(self) -> None:
        self.failures = 0
        self.until = None

    def active(self, now: datetime) -> bool:
        return self.until is not None and now < self.until


@dataclass
class LaneEnv:
    """What every lane of a worker shares."""

    ledger: Ledger
    index: OrderIndex
    sink: Sink
    policy: RiskPolicy
    flags: Callable[[], FlagView]
    kill_command: Callable[[str], ControlCommand | None]
    strategy_enabled: Callable[[str], bool]
    crash: CrashPoints
    clock: Callable[[], datetime] = utc_now
    # Whether TA for a symbol is too stale to trade (`ta_stale`); the freshness check feeds it.
    ta_blocks_orders: Callable[[str, datetime], bool] = lambda symbol, now: False
    # Extra refusals of a lane at the last moment, e.g. the trading state (active / reducing /
    # halted, issue #17) or a stale control feed: reasons, or an empty list.
    lane_refusals: Callable[[str], list[str]] = lambda label: []
    # Last-moment refusals that depend on the order itself: the trading state (reducing needs
    # the position) and the pre-trade controls (`streams.execution.order_guard`).
    order_refusals: Callable[[str, LedgerEntry, AccountSnapshot | None, datetime], list[str]] = (
        lambda label, entry, snapshot, now: []
    )
    order_sent: Callable[[str, LedgerEntry, datetime], None] = lambda label, entry, now: None
    # A durable ledger write not acknowledged within this long parks a `submitting` entry.
    durable_timeout: float = DURABLE_TIMEOUT_SECONDS
    # Why the lane must wait before it plans or sends (e.g. its start-up reconciliation is not
    # finished, issue #17): the decision is parked, not rejected. None: go on.
    lane_waits: Callable[[str], str | None] = lambda label: None


@dataclass
class Lane:
    account: Account
    broker: Broker
    env: LaneEnv
    status: LaneStatus
    snapshot: AccountSnapshot | None = None
    circuit: Backoff = field(default_factory=lambda: Backoff(1.0, 60.0))
    auth: Backoff = field(default_factory=lambda: Backoff(5.0, 300.0))
    # Postgres down: its own backoff, never the broker circuit (and never a broker error).
    database: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    # Ledger writes not acknowledged in time (Kafka slow or down).
    storage: Backoff = field(default_factory=lambda: Backoff(1.0, 30.0))
    parked: dict[str, datetime] = field(default_factory=dict)  # decision_hash → retry_at
    # Decisions deferred for lack of room, re-driven oldest first as the lane has room.
    backlog: Backlog = field(default_factory=Backlog)
    # The broker account number these keys reach, once checked against the label's pin.
    verified_account: str | None = None
    mismatch: str | None = None  # why the lane is stopped: its keys reach another account
    # The last order's POST: its start, then its answer. A snapshot requested before it may
    # lack that order (the broker may not have had it yet): it never replaces the snapshot
    # holding the order's reservation.
    last_order_sent: datetime | None = None
    # The account's sizing limits when its registry entry overrides one (else the policy's).
    sizing: SizingLimits | None = None
    # Decisions being handled, by hash: a second delivery of one (redelivered and re-driven at
    # once) waits for the first to finish, even once the first let the lane's next decision go.
    _handling: dict[str, asyncio.Event] = field(default_factory=dict, repr=False, init=False)

    @property
    def label(self) -> str:
        return self.account.label

    # ------------------------------------------------------------------ entry point
    async def handle(
        self,
        decision: AccountDecision,
        consumed_at: float | None = None,
        proceed: Callable[[], None] = _nothing,
    ) -> LedgerEntry:
        """Take one decision (new, redelivered or re-driven) as far as it can go now.

        `proceed` is called once the broker has answered this decision's order: from then on
        the lane's next decision may run beside this one's bookkeeping."""
        started = consumed_at if consumed_at is not None else time.perf_counter()
        attempt = Attempt(started, proceed)
        key = ledger_key(self.label, decision.decision_hash)
        while (running := self._handling.get(key)) is not None:
            await running.wait()  # one writer per ledger entry (bounded: that pass's own steps)
        finished = self._handling[key] = asyncio.Event()
        try:
            return await self._handle(decision, key, attempt)
        finally:
            del self._handling[key]
            finished.set()

    async def _handle(self, decision: AccountDecision, key: str, attempt: Attempt) -> LedgerEntry:
        self.status.record_decision(decision.decision_hash)
        self.backlog.discard(decision.decision_hash)  # taken up: no longer waiting for room
        entry = self.env.ledger.get(key)
        refused: list[str] = []
        if entry is None:
            self.env.crash.point("before_ledger_write")
            # Not written: no side effect comes before `planned`, and every way out of the plan
            # step (planned, rejected, parked) writes the entry itself.
            entry = received(decision, self.env.clock())
            refused = self._claim_slot(decision)
        try:
            if refused:
                entry = await self._reject(entry, refused)
            entry = await self._drive(entry, attempt)
        except Exception as exc:  # noqa: BLE001 - a poison decision must not stop the lane
            entry = await self._internal_error(entry, exc)
            if entry.step is Step.persist and entry.retry_at is None:
                entry = await self._persist(entry)  # the rejection is recorded, not dropped
        self._track(entry)
        if entry.state is LedgerState.submitted:
            self.env.crash.point("before_commit")  # done, but the offset is not committed yet
        return entry

    async def defer(self, decision: AccountDecision) -> LedgerEntry:
        """No room in the lane now: record the decision, parked, without any broker call or
        database write, so that its offset can be acked; it waits in the lane's `backlog` and
        is re-driven as soon as the lane has room. Its signal slot is claimed now (a refusal is
        recorded as the rejection)."""
        self.status.record_decision(decision.decision_hash)
        key = ledger_key(self.label, decision.decision_hash)
        now = self.env.clock()
        if key in self._handling:
            # A pass of this decision is running and owns its entry (it may not be written
            # yet: a deferral written now could land after its `submitting`); what that pass
            # leaves unfinished it parks and re-drives itself.
            return self.env.ledger.get(key) or received(decision, now)
        entry = self.env.ledger.get(key)
        if entry is not None:  # known (redelivered or re-driven): its lane takes it up again
            if entry.step is Step.done:
                self.backlog.discard(entry.decision_hash)
            else:
                # Re-driven when the lane has room (its place kept), not after a parked hold.
                self.parked.pop(entry.decision_hash, None)
                self.backlog.ready(entry.decision_hash)
            return entry
        entry = received(decision, now)
        refused = self._claim_slot(decision)
        if refused:
            entry = entry.rejected(tuple(refused), now)
            self.status.record_rejection(entry.decision_hash, refused)
        parked = entry.parked(now, DEFERRED, now)
        # Acked after this, so it must be in the ledger. No lane waits on it, so the bound is
        # long (a Kafka outage of a few minutes is survived); past it the caller stops the
        # worker with the offset unacked (`DeferralNotDurable`): the decision is read again.
        try:
            await asyncio.wait_for(self.env.ledger.put(parked), DEFERRAL_TIMEOUT_SECONDS)
        except TimeoutError:
            raise DeferralNotDurable(
                f"deferral of {parked.decision_hash} not acknowledged by Kafka "
                f"within {DEFERRAL_TIMEOUT_SECONDS:g} s"
            ) from None
        self.status.record_deferral()
        self.backlog.ready(parked.decision_hash)
        return parked

    def _claim_slot(self, decision: AccountDecision) -> list[str]:
        """One decision per (account, symbol, timeframe, signal event time): the first one seen
        takes the slot; another one for the same slot is refused (and counted)."""
        slot = signal_slot(decision)
        owner = self.env.ledger.slot_owner(self.label, slot)
        if owner is None:
            self.env.ledger.take_slot(self.label, slot, decision.decision_hash)
            return []
        if owner == decision.decision_hash:
            return []
        SLOT_CONFLICTS.labels(account=self.label).inc()
        log.warning(
            "a second decision for the same signal refused",
            extra={
                "account": self.label,
                "decision_hash": decision.decision_hash,
                "slot_owner": owner,
                "symbol": decision.symbol,
            },
        )
        return [DUPLICATE_SIGNAL_DECISION]

    async def _check_account(self, entry: LedgerEntry) -> LedgerEntry | None:
        """None when the lane's keys are known to reach the broker account its label is pinned
        to; otherwise what becomes of the entry instead (nothing is sent or looked up)."""
        if self.verified_account is None and self.mismatch is None:
            try:
                await self.refresh_snapshot()  # checks the pin on the way
            except BrokerError as exc:
                if entry.state is LedgerState.submitting:
                    self._note_failure(exc)
                    return await self._park(entry, f"account check failed: {exc.kind}")
                return await self._broker_refused(entry, exc)
        if self.mismatch is not None:
            if entry.state is LedgerState.submitting:
                return await self._park(entry, ACCOUNT_MISMATCH)  # it may exist at the pinned one
            return await self._reject(entry, [ACCOUNT_MISMATCH])
        if self.verified_account is None:
            now = self.env.clock()
            self.status.set_database_unavailable("account pin not verified")
            until = self.database.until if self.database.active(now) else None
            return await self._park(
                entry,
                "account pin not verified yet (database unavailable)",
                until or self.database.fail(now),
            )
        return None

    async def _drive(self, entry: LedgerEntry, attempt: Attempt) -> LedgerEntry:
        for _ in range(MAX_STEPS):
            step = entry.step
            if step is Step.done:
                return entry
            if entry.state is LedgerState.planned:
                # Its decision row (unless written) goes with the durable `submitting`.
                new = await self._submit(entry, attempt)
            elif step is Step.plan:
                new = await self._plan(entry)
            elif step is Step.persist:
                new = await self._persist(entry)
            else:
                new = await self._resolve(entry, attempt)
            if new.retry_at is not None:
                return new  # parked: taken up again later
            entry = new
        return entry

    # ------------------------------------------------------------------ steps
    def _context(self) -> LaneContext:
        return LaneContext(
            account_label=self.label,
            live=self.account.is_live,
            flags=self.env.flags(),
            control_kill=self.env.kill_command(self.label) is not None,
        )

    async def _plan(self, entry: LedgerEntry) -> LedgerEntry:
        now = self.env.clock()
        if self.auth.active(now):
            return await self._reject(entry, [UNAUTHORIZED])
        decision = entry.decision
        gate = gate_reasons(
            self.env.policy,
            self._context(),
            decision,
            strategy_enabled=self.env.strategy_enabled(decision.strategy_id),
            now=now,
            ta_stale=self.env.ta_blocks_orders(decision.symbol, now),
        )
        if gate:
            return await self._reject(entry, gate)
        waiting = await self._wait_if_told(entry)
        if waiting is not None:
            return waiting
        if self.circuit.active(now):
            return await self._park(entry, "lane backing off after broker errors")
        instead = await self._check_account(entry)
        if instead is not None:
            return instead
        try:
            snapshot = await self._current_snapshot(now)
        except BrokerError as exc:
            return await self._broker_refused(entry, exc)
        result = size_order(decision, snapshot, self.sizing or self.env.policy.sizing)
        if result.plan is None:
            return await self._reject(entry, result.reasons)
        # Not written: a crash before `submitting` leaves nothing, and the decision is planned
        # again when it is redelivered; a rejection or a park from here writes the entry.
        return entry.planned(result.plan, self.env.clock())

    async def _persist(self, entry: LedgerEntry) -> LedgerEntry:
        try:
            await self.env.sink.persist(entry)
        except Exception as exc:  # noqa: BLE001 - classified: poison row or database down
            if is_poison(exc):
                return await self._poison_row(entry, exc)
            return await self._database_down(entry, exc)
        self._database_ok()
        done = entry.marked_persisted()
        if done.terminal:  # a planned entry goes straight on to a step that writes it
            await self.env.ledger.put(done, durable=False)
        return done

    async def _database_down(self, entry: LedgerEntry, exc: BaseException) -> LedgerEntry:
        """Postgres unavailable: park on the database backoff (never the broker circuit)."""
        now = self.env.clock()
        until = self.database.until if self.database.active(now) else None
        until = until or self.database.fail(now)
        self.status.set_database_unavailable(f"{type(exc).__name__}")
        log.warning(
            "database unavailable; decision parked until %s",
            until.isoformat(),
            extra={"account": self.label, "decision_hash": entry.decision_hash},
        )
        return await self._park(entry, f"database: {type(exc).__name__}", until)

    def _database_ok(self) -> None:
        if self.database.failures:
            self.database.ok()
            self.status.set_database_unavailable(None)

    async def _poison_row(self, entry: LedgerEntry, exc: BaseException) -> LedgerEntry:
        """Postgres refused this decision's row for its data: only this decision is affected.
        Not sent yet: rejected (`persist_failed:<sqlstate>`). Otherwise (sent, or the rejection
        row refused too) the ledger entry is closed as it is, quarantined, and logged."""
        reason = f"{PERSIST_FAILED}:{reason_code(exc)}"
        PERSIST_QUARANTINED.labels(account=self.label).inc()
        log.error(
            "Postgres refused the decision's row (%s)",
            reason,
            extra={
                "account": self.label,
                "decision_hash": entry.decision_hash,
                "state": entry.state.value,
                "alpaca_order_id": entry.alpaca_order_id,
            },
        )
        if entry.state in (LedgerState.received, LedgerState.planned):
            rejected = await self._reject(entry, [reason])
            try:
                await self.env.sink.persist(rejected)
            except Exception as again:  # noqa: BLE001 - classified below
                if not is_poison(again):
                    return await self._database_down(rejected, again)
                return await self._quarantine(rejected, reason)
            done = rejected.marked_persisted()
            await self.env.ledger.put(done, durable=False)
            return done
        return await self._quarantine(entry, reason)

    async def _quarantine(self, entry: LedgerEntry, reason: str) -> LedgerEntry:
        """Close the entry without a Postgres row: the ledger keeps it (and the reason)."""
        closed = entry.model_copy(
            update={"persisted": True, "retry_at": None, "last_error": f"quarantined: {reason}"}
        )
        await self._store(closed)
        return closed

    def _refusals(self, entry: LedgerEntry, now: datetime) -> list[str]:
        """Checked again immediately before the request leaves for the broker, after every
        wait: flags, kill switches, the lane's state (trading state, control feed), the age
        guard and TA freshness."""
        reasons = control_reasons(self.env.policy, self._context(), entry.decision.symbol)
        reasons.extend(r for r in self.env.lane_refusals(self.label) if r not in reasons)
        checks = self.env.order_refusals(self.label, entry, self.snapshot, now)
        reasons.extend(r for r in checks if r not in reasons)
        if is_stale(self.env.policy, entry.decision, now, live=self.account.is_live):
            reasons.append(STALE)
        if TA_STALE not in reasons and self.env.ta_blocks_orders(entry.decision.symbol, now):
            reasons.append(TA_STALE)
        return reasons

    async def _submit(self, entry: LedgerEntry, attempt: Attempt) -> LedgerEntry:
        """A planned entry: the controls, then the durable `submitting` with the decision row
        (unless written), then the POST."""
        now = self.env.clock()
        refusals = self._refusals(entry, now)
        if refusals:
            return await self._reject(entry, refusals)
        if self.auth.active(now):
            return await self._reject(entry, [UNAUTHORIZED])
        waiting = await self._wait_if_told(entry)
        if waiting is not None:
            return waiting
        if self.circuit.active(now):
            return await self._park(entry, "lane backing off after broker errors")
        instead = await self._check_account(entry)
        if instead is not None:
            return instead
        row = None if entry.persisted else entry
        return await self._send(entry.submitting(now), attempt, row)

    async def _resolve(self, entry: LedgerEntry, attempt: Attempt) -> LedgerEntry:
        """An entry in `submitting`: the order may exist. Look it up before anything else."""
        now = self.env.clock()
        if self.auth.active(now) or self.circuit.active(now):
            return await self._park(entry, "lane backing off; order outcome unknown")
        instead = await self._check_account(entry)
        if instead is not None:
            return instead  # never looked up (or sent) at an account the label is not pinned to
        try:
            order = await self.broker.order_by_client_id(entry.decision_hash)
        except BrokerError as exc:
            self._note_failure(exc)
            return await self._park(entry, f"lookup failed: {exc.kind}")
        if order is not None:
            return await self._accepted(entry, order, attempt)
        refusals = self._refusals(entry, self.env.clock())
        if refusals:  # no order exists, and none may be sent any more
            return await self._reject(entry, refusals)
        waiting = await self._wait_if_told(entry)
        if waiting is not None:
            return waiting  # still `submitting`: looked up again before any POST
        # Its decision row may not have been written (a crash, or Postgres down, beside the
        # first `submitting`): it is written again (idempotent) before anything is sent.
        row = entry.model_copy(update={"state": LedgerState.planned, "persisted": False})
        return await self._send(entry.submitting(self.env.clock()), attempt, row)

    async def _send(
        self, submitting: LedgerEntry, attempt: Attempt, row: LedgerEntry | None = None
    ) -> LedgerEntry:
        """Durable `submitting`, and the decision row of `row` (a planned entry) at the same
        time; then the controls, once more, and the POST. Nothing is sent unless both are
        written: a row Postgres refuses rejects the decision (`persist_failed`), Postgres down
        parks it."""
        plan = submitting.plan
        assert plan is not None
        self.env.index.remember(self.label, client_order_id=plan.client_order_id)
        # Durable before the POST (and the index with it), within a bound: unacknowledged, the
        # entry parks in `submitting`, so the resolve path looks the order up before any POST.
        if row is None:
            stored = await self._store(submitting)
        else:
            stored, refused = await asyncio.gather(self._store(submitting), self._decision_row(row))
            if refused is not None:
                if is_poison(refused):
                    return await self._poison_row(row, refused)
                # Nothing was sent in this pass: parked as planned, unless an earlier attempt
                # may have sent it (then it stays `submitting`: looked up before any POST).
                return await self._database_down(row if not row.attempts else submitting, refused)
        if not stored:
            now = self.env.clock()
            return await self._park(
                submitting, "ledger write not acknowledged in time", self.storage.fail(now)
            )
        self.storage.ok()
        # The last moment: every wait is behind us and nothing was sent for this attempt.
        refusals = self._refusals(submitting, self.env.clock())
        if refusals:
            return await self._reject(submitting, refusals)
        self.last_order_sent = self.env.clock()
        self.env.order_sent(self.label, submitting, self.last_order_sent)
        try:
            order = await self.broker.submit_order(plan)
        except BrokerError as exc:
            if not exc.ambiguous:
                return await self._broker_refused(submitting, exc)
            return await self._lookup_after(submitting, exc, attempt)
        self.env.crash.point("after_submit")
        return await self._accepted(submitting, order, attempt)

    async def _decision_row(self, planned: LedgerEntry) -> BaseException | None:
        """Write the decision row of a planned entry; what went wrong, or None."""
        try:
            await self.env.sink.persist(planned)
        except Exception as exc:  # noqa: BLE001 - classified by the caller: poison or down
            return exc
        self._database_ok()
        return None

    async def _lookup_after(
        self, submitting: LedgerEntry, exc: BrokerError, attempt: Attempt
    ) -> LedgerEntry:
        """One immediate lookup after an ambiguous POST; otherwise park (still `submitting`)."""
        self._note_failure(exc)
        log.warning(
            "order outcome unknown; looking it up by client order id",
            extra={
                "account": self.label,
                "decision_hash": submitting.decision_hash,
                "error": str(exc),
            },
        )
        try:
            order = await self.broker.order_by_client_id(submitting.decision_hash)
        except BrokerError as lookup_exc:
            self._note_failure(lookup_exc)
            return await self._park(submitting, f"{exc.kind}; lookup failed: {lookup_exc.kind}")
        if order is not None:
            return await self._accepted(submitting, order, attempt)
        return await self._park(submitting, f"{exc.kind}; no order found yet")

    async def _accepted(
        self, submitting: LedgerEntry, order: dict[str, Any], attempt: Attempt
    ) -> LedgerEntry:
        now = self.env.clock()
        self.last_order_sent = now  # the broker has it: a snapshot requested from now holds it
        done = submitting.submitted(order, now)
        self.env.index.remember(self.label, alpaca_order_id=done.alpaca_order_id)
        self._note_ok()
        plan = submitting.plan
        if self.snapshot is not None and plan is not None:
            self.snapshot = self.snapshot.after_order(plan)
        # What the account's next order depends on is up to date (snapshot, windows, index):
        # it may go now. The rows come next, then `submitted` (persisted) in one ledger write,
        # not awaited: whatever of it is lost in a crash, `submitting` is durable, and the order
        # is found by lookup before anything is sent again (the rows are idempotent upserts).
        attempt.proceed()
        latency_ms = (time.perf_counter() - attempt.started) * 1000.0
        self.status.record_submission(
            done.decision_hash, now, signal_at=submitting.decision.event_ts
        )
        log.info(
            "order acknowledged by the broker in %.1f ms (%s, attempt %d)",
            latency_ms,
            done.decision_hash[:12],
            done.attempts,
            extra={
                "account": self.label,
                "decision_hash": done.decision_hash,
                "alpaca_order_id": done.alpaca_order_id,
                "attempts": done.attempts,
                "consume_to_ack_ms": round(latency_ms, 2),
            },
        )
        self.env.crash.point("before_persist")
        return done

    # ------------------------------------------------------------------ outcomes
    async def _reject(
        self, entry: LedgerEntry, reasons: list[str] | tuple[str, ...]
    ) -> LedgerEntry:
        rejected = entry.rejected(tuple(reasons), self.env.clock())
        await self._store(rejected)
        self.status.record_rejection(entry.decision_hash, list(reasons))
        log.info(
            "decision rejected (%s)",
            ", ".join(reasons),
            extra={
                "account": self.label,
                "decision_hash": entry.decision_hash,
                "reasons": list(reasons),
            },
        )
        return rejected

    async def _park(
        self, entry: LedgerEntry, why: str, retry_at: datetime | None = None
    ) -> LedgerEntry:
        """Keep the entry as it is and take it up again at `retry_at` (default: after the
        lane's current broker backoff)."""
        now = self.env.clock()
        parked = entry.parked(retry_at or self._retry_time(now), why, now)
        await self.env.ledger.put(parked, durable=False)
        return parked

    async def _wait_if_told(self, entry: LedgerEntry) -> LedgerEntry | None:
        """Parked (not rejected) while `LaneEnv.lane_waits` gives a reason; re-driven when its
        waiting ends (the owner makes the lane's parked decisions due) or after `WAIT_RETRY`.
        A decision that waits past the age limit is then rejected as stale, as any other."""
        why = self.env.lane_waits(self.label)
        if why is None or self.mismatch is not None:
            return None  # a lane stopped for its keys refuses (account_mismatch), never waits
        now = self.env.clock()
        if is_stale(self.env.policy, entry.decision, now, live=self.account.is_live):
            return await self._reject(entry, [STALE])  # waited too long: never sent
        return await self._park(entry, why, now + WAIT_RETRY)

    async def _store(self, entry: LedgerEntry) -> bool:
        """A durable ledger write, waited for at most `durable_timeout`: False when not
        acknowledged in time (the write goes on in the background; a crash before it lands
        redelivers the decision, and its entry is resolved by lookup)."""
        write = asyncio.ensure_future(self.env.ledger.put(entry))
        try:
            await asyncio.wait_for(asyncio.shield(write), self.env.durable_timeout)
        except TimeoutError:
            write.add_done_callback(_consume_result)
            log.warning(
                "ledger write not acknowledged within %.1fs",
                self.env.durable_timeout,
                extra={"account": self.label, "decision_hash": entry.decision_hash},
            )
            return False
        return True

    def _retry_time(self, now: datetime) -> datetime:
        """The end of the active backoff; with none active, this failure opens one."""
        ends = [b.until for b in (self.circuit, self.auth) if b.active(now) and b.until is not None]
        return max(ends) if ends else self.circuit.fail(now)

    async def _broker_refused(self, entry: LedgerEntry, exc: BrokerError) -> LedgerEntry:
        """A definitive broker answer (or a call that could not be made): reject or park."""
        self._note_failure(exc)
        if exc.kind is ErrorClass.auth:
            return await self._reject(entry, [UNAUTHORIZED])
        if exc.kind in REFUSALS:
            return await self._reject(entry, [exc.rejection_reason])
        return await self._park(entry, f"broker: {exc.kind}")  # rate limited: nothing was created

    async def _internal_error(self, entry: LedgerEntry, exc: Exception) -> LedgerEntry:
        """A bug or a poison decision: never lose it, never hold the lane."""
        log.exception(
            "lane failed on a decision",
            extra={"account": self.label, "decision_hash": entry.decision_hash},
        )
        self.status.record_error("internal", f"{type(exc).__name__}")
        current = self.env.ledger.get(entry.key) or entry
        if current.state is LedgerState.submitting or current.terminal:
            return await self._park(current, f"internal: {type(exc).__name__}")
        return await self._reject(current, [f"lane_error:{type(exc).__name__}"])

    # ------------------------------------------------------------------ broker health
    def _note_failure(self, exc: BrokerError) -> None:
        now = self.env.clock()
        self.status.record_error(exc.kind.value, str(exc))
        if exc.kind is ErrorClass.auth:
            until = self.auth.fail(now)
            self.status.mark_down(f"{UNAUTHORIZED}: broker calls paused until {until.isoformat()}")
        elif exc.ambiguous or exc.kind is ErrorClass.rate_limit:
            self.circuit.fail(now)
        elif exc.kind in REFUSALS and exc.kind is not ErrorClass.forbidden:
            self.status.record_ok(now)  # the broker answered: the lane itself is fine

    def _note_ok(self) -> None:
        if self.auth.failures:
            self.status.mark_up()
        self.auth.ok()
        self.circuit.ok()
        self.status.record_ok()

    # ------------------------------------------------------------------ snapshot and upkeep
    async def _current_snapshot(self, now: datetime) -> AccountSnapshot:
        if self.snapshot is None or now - self.snapshot.as_of > SNAPSHOT_MAX_AGE:
            return await self.refresh_snapshot()
        return self.snapshot

    async def refresh_snapshot(self) -> AccountSnapshot:
        """GET account and positions; the snapshot sizing reads. Raises BrokerError.

        Also checks the label's pin. A snapshot requested before the lane's last order was sent
        may not hold that order: it never replaces the snapshot that has its reservation."""
        requested = self.env.clock()
        try:
            account = await self.broker.account()
            positions = await self.broker.positions()
        except BrokerError as exc:
            self._note_failure(exc)
            raise
        self._note_ok()
        await self._pin(str(account.get("account_number") or ""))
        snapshot = AccountSnapshot.from_alpaca(
            self.label, account, positions, self.env.clock(), requested
        )
        sent = self.last_order_sent
        if self.snapshot is not None and sent is not None and requested <= sent:
            return self.snapshot  # older than the last order: keep the reservation
        self.snapshot = snapshot
        try:
            await self.env.sink.snapshot(snapshot, positions)
        except Exception as exc:  # noqa: BLE001 - a reporting row; sizing already has it
            log.warning("position snapshot not stored: %s", type(exc).__name__)
        return snapshot

    async def _pin(self, number: str) -> None:
        """The first account number seen for a label is recorded (Postgres); keys that reach
        another account stop the lane: it refuses every decision, says why, and is down."""
        if self.mismatch is not None:
            return
        if self.verified_account is not None:
            if number != self.verified_account:
                self._stop_mismatched(self.verified_account, number)
            return
        if not number:
            self._stop_mismatched("(pinned)", "an account without an account number")
            return
        try:
            pinned = await self.env.sink.pin_account(self.label, number)
        except Exception as exc:  # noqa: BLE001 - not verified yet; orders wait (parked)
            log.warning(
                "account pin not checked: %s", type(exc).__name__, extra={"account": self.label}
            )
            return
        if pinned != number:
            self._stop_mismatched(pinned, number)
        else:
            self.verified_account = number

    def _stop_mismatched(self, pinned: str, found: str) -> None:
        self.mismatch = (
            f"label {self.label!r} is pinned to broker account {pinned} but its keys reach "
            f"{found}: the lane is stopped; fix the keys or the label"
        )
        self.status.mark_down(f"{ACCOUNT_MISMATCH}: {self.mismatch}")
        log.error("%s: %s", ACCOUNT_MISMATCH, self.mismatch, extra={"account": self.label})

    async def cancel_open_orders(self, why: str) -> int:
        """Kill switch engaged with cancellation: cancel every open order of this account once."""
        answers = await self.broker.cancel_open_orders()
        log.warning(
            "open orders cancelled (kill switch)",
            extra={"account": self.label, "orders": len(answers), "reason": why},
        )
        return len(answers)

    def _track(self, entry: LedgerEntry) -> None:
        if entry.retry_at is not None:
            self.parked[entry.decision_hash] = entry.retry_at
        else:
            self.parked.pop(entry.decision_hash, None)

    def due(self, now: datetime, hold: timedelta) -> list[str]:
        """Parked decisions whose time has come; each is held back `hold` until re-driven."""
        hashes = [h for h, at in self.parked.items() if at <= now]
        for h in hashes:
            self.parked[h] = now + hold
        return hashes


def _consume_result(task: asyncio.Future[None]) -> None:
    """A write given up on: its late failure is logged, not left unretrieved."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("a late ledger write failed: %r", task.exception())
