"""Per-account REST reconciliation: the broker's word over a stream that can miss events.

For each owned account, on a timer and on request (a forwarder reconnected):
1. every execution not yet terminal is re-fetched by its Alpaca order id (by client order id
   when the order id is unknown) and folded in monotonically, like a trade update;
2. every decision left `planned`/`submitting` for a while is looked up by client order id (its
   decision hash): found = a crash after submit, the execution is created and linked (with any
   events that arrived before it); not found and older than the decision age limit = it will
   never be submitted (the lane rejects stale decisions), so it is closed as
   `decision_timeout_unsubmitted`;
3. the account snapshot is refreshed.
Accounts run concurrently, each under its own lock and time budget, so one account's broker
errors or hangs never delay another's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

from streams.broker.errors import BrokerError, ErrorClass
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.rest import execution_from_rest, order_update_from_rest
from streams.errors import retry_transient
from streams.persistence.rows import (
    ApplyOutcome,
    ApplyResult,
    ExecutionRow,
    OrderUpdateRow,
    PendingDecision,
)

log = logging.getLogger(__name__)

TIMEOUT_REASON = "decision_timeout_unsubmitted"


class BrokerOrders(Protocol):
    """Order look-ups of one account (`streams.broker.AlpacaBroker`); None = HTTP 404.

    Failures raise `streams.broker.BrokerError`.
    """

    async def order_by_id(self, order_id: str) -> dict[str, Any] | None: ...

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None: ...


class ReconcileStore(Protocol):
    async def open_executions(self, account: str) -> list[ExecutionRow]: ...

    async def decisions_pending(
        self, account: str, older_than: datetime, statuses: Any = ...
    ) -> list[PendingDecision]: ...

    async def upsert_execution(self, row: ExecutionRow) -> int: ...

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult: ...

    async def set_decision_status(
        self, account: str, decision_hash: str, status: str, reasons: Any = None
    ) -> bool: ...


BrokerFor = Callable[[str], BrokerOrders | None]
SnapshotRefresh = Callable[[str], Awaitable[None]]
ErrorSink = Callable[[str, BaseException], None]


@dataclass(frozen=True)
class ReconcilePolicy:
    account_timeout: float = 25.0
    pending_after: timedelta = timedelta(seconds=30)
    unsubmitted_after: timedelta = timedelta(seconds=600)


@dataclass
class AccountReport:
    account: str
    executions_checked: int = 0
    executions_fixed: int = 0
    decisions_recovered: int = 0
    decisions_timed_out: int = 0
    missing_orders: list[str] = field(default_factory=list)
    paused: bool = False  # rate limited: the next run continues


class Reconciler:
    def __init__(
        self,
        store: ReconcileStore,
        broker_for: BrokerFor,
        *,
        policy: ReconcilePolicy,
        refresh_snapshot: SnapshotRefresh | None = None,
        on_error: ErrorSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._broker_for = broker_for
        self._policy = policy
        self._refresh_snapshot = refresh_snapshot
        self._on_error = on_error
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        self._requested: dict[str, asyncio.Task[None]] = {}

    # ---- entry points
    async def reconcile_accounts(self, accounts: Iterable[str]) -> dict[str, str]:
        """Reconcile every account concurrently; the outcome per account (ok/error/timeout)."""
        labels = list(accounts)
        outcomes = await asyncio.gather(*(self.reconcile_bounded(a) for a in labels))
        return dict(zip(labels, outcomes, strict=True))

    def request(self, account: str, reason: str) -> None:
        """Reconcile `account` soon, without waiting (coalesces with a run in progress)."""
        running = self._requested.get(account)
        if running is not None and not running.done():
            return
        log.info("reconcile requested", extra={"account": account, "reason": reason})
        self._requested[account] = asyncio.create_task(
            self._run_requested(account), name=f"reconcile:{account}"
        )

    async def _run_requested(self, account: str) -> None:
        await self.reconcile_bounded(account)

    async def reconcile_bounded(self, account: str) -> str:
        """One account under its lock and time budget; never raises."""
        lock = self._locks.setdefault(account, asyncio.Lock())
        started = time.monotonic()
        async with lock:
            try:
                report = await asyncio.wait_for(
                    self.reconcile_account(account), self._policy.account_timeout
                )
            except TimeoutError as exc:
                return self._failed(account, "timeout", exc)
            except Exception as exc:  # noqa: BLE001 - one account never stops the others
                return self._failed(account, "error", exc)
            finally:
                metrics.RECONCILE_SECONDS.labels(account).observe(time.monotonic() - started)
        metrics.RECONCILE_RUNS.labels(account, "ok").inc()
        if report.executions_fixed or report.decisions_recovered or report.decisions_timed_out:
            log.info("account reconciled", extra={"account": account, **vars(report)})
        return "ok"

    def _failed(self, account: str, outcome: str, exc: BaseException) -> str:
        metrics.RECONCILE_RUNS.labels(account, outcome).inc()
        log.warning(
            "reconcile of %s failed (%s): %s",
            account,
            outcome,
            type(exc).__name__,
            extra={"account": account, "outcome": outcome},
        )
        if self._on_error is not None:
            self._on_error(account, exc)
        return outcome

    # ---- one account
    async def reconcile_account(self, account: str) -> AccountReport:
        report = AccountReport(account)
        broker = self._broker_for(account)
        if broker is None:
            raise LookupError(f"no broker client for account {account!r}")
        try:
            await self._refresh_open_executions(account, broker, report)
            await self._resolve_pending_decisions(account, broker, report)
        except _Paused:
            report.paused = True
            log.info("reconcile of %s paused: rate limited", account, extra={"account": account})
        if self._refresh_snapshot is not None:
            await self._refresh_snapshot(account)
        return report

    async def _refresh_open_executions(
        self, account: str, broker: BrokerOrders, report: AccountReport
    ) -> None:
        executions = await retry_transient(
            lambda: self._store.open_executions(account), "open_executions", attempts=3
        )
        for execution in executions:
            report.executions_checked += 1
            try:
                order = await _guarded(
                    account,
                    partial(_fetch, broker, execution.alpaca_order_id, execution.client_order_id),
                )
            except _LookupFailed:
                continue
            if order is None:
                report.missing_orders.append(execution.client_order_id)
                continue
            if await self._fold(account, execution, order):
                report.executions_fixed += 1
                metrics.RECONCILE_FIXES.labels(account, "execution").inc()

    async def _fold(self, account: str, execution: ExecutionRow, order: Mapping[str, Any]) -> bool:
        """Fold the broker's state in; True when the execution moved forward."""
        now = self._clock()
        if execution.alpaca_order_id is None:
            # Submitted but the answer was lost: record the order id so that trade updates
            # stored unlinked get linked, then fold the state.
            await self._store.upsert_execution(execution_from_rest(account, order, now))
        update = order_update_from_rest(account, order, now)
        result = await self._store.apply_order_update(update)
        if result.outcome is ApplyOutcome.overfill:
            metrics.OVERFILLS.labels(account, "rest").inc()
            log.error("over-fill refused (REST order state)", extra={"account": account})
        return result.outcome is ApplyOutcome.applied

    async def _resolve_pending_decisions(
        self, account: str, broker: BrokerOrders, report: AccountReport
    ) -> None:
        now = self._clock()
        pending = await retry_transient(
            lambda: self._store.decisions_pending(account, now - self._policy.pending_after),
            "decisions_pending",
            attempts=3,
        )
        for decision in pending:
            try:
                order = await _guarded(
                    account, partial(broker.order_by_client_id, decision.decision_hash)
                )
            except _LookupFailed:
                continue
            if order is not None:
                await self._store.upsert_execution(execution_from_rest(account, order, now))
                await self._store.apply_order_update(order_update_from_rest(account, order, now))
                report.decisions_recovered += 1
                metrics.RECONCILE_FIXES.labels(account, "decision_recovered").inc()
            elif order is None and decision.created_at <= now - self._policy.unsubmitted_after:
                await self._store.set_decision_status(
                    account, decision.decision_hash, "rejected", [TIMEOUT_REASON]
                )
                report.decisions_timed_out += 1
                metrics.RECONCILE_FIXES.labels(account, "decision_timeout").inc()


class _LookupFailed(Exception):
    """This look-up failed (timeout, 5xx, ...): skip the order, the next run retries it."""


class _Paused(Exception):
    """The account's request budget is spent: stop this run, the next one continues."""


# The account itself is unusable (credentials, permissions): the run fails.
_FATAL = frozenset({ErrorClass.auth, ErrorClass.forbidden})


async def _guarded(
    account: str, call: Callable[[], Awaitable[dict[str, Any] | None]]
) -> dict[str, Any] | None:
    """One broker look-up: the order, or None when the broker does not know it (404)."""
    try:
        return await call()
    except BrokerError as exc:
        if exc.kind in _FATAL:
            raise
        if exc.kind is ErrorClass.rate_limit:
            raise _Paused from None
        log.warning("reconcile look-up failed: %s", exc.kind.value, extra={"account": account})
        raise _LookupFailed from None


async def _fetch(
    broker: BrokerOrders, order_id: str | None, client_order_id: str
) -> dict[str, Any] | None:
    if order_id:
        return await broker.order_by_id(order_id)
    return await broker.order_by_client_id(client_order_id)
