"""The worker's reconciliation: REST reconciliation and trade-update batches of owned accounts.

An account is reconciled by the worker that owns it (`streams.ownership`): the one running its
lane, where its re-keyed trade updates (and reconcile requests) arrive too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from streams.broker.pool import BrokerPool
from streams.compat import held_until_handled
from streams.dlq import DeadLetters
from streams.domain.accounts import AccountRegistry
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.model import TradeUpdate
from streams.domain.trade_updates.rest import execution_from_rest, order_update_from_rest
from streams.errors import exit_worker, is_infrastructure, retry_transient
from streams.observability.status import StatusBoard
from streams.persistence.rows import (
    ApplyResult,
    ExecutionRow,
    OrderEventRow,
    OrderUpdateRow,
    SubmissionRow,
)
from streams.persistence.shared import RepositoryProvider
from streams.reconciliation.applier import OrderFeedApplier
from streams.reconciliation.fills import ReplayReport, replay_fills
from streams.reconciliation.positions import (
    DriftReport,
    DriftTracker,
    TradingStateSetter,
    position_drift,
)
from streams.reconciliation.reconciler import BrokerOrders, ReconcilePolicy, Reconciler
from streams.reconciliation.startup import (
    GateState,
    LaneGates,
    position_quantities,
    reconcile_open_orders,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

DeadLetterEvent = Callable[[Any, str, BaseException], Awaitable[None]]
GiveUp = Callable[[str], None]
ORDER_FEED_UNAVAILABLE = "order_feed_unavailable"

UNSUBMITTED_MARGIN_SECONDS = 60.0
# A decision row is written before its order is sent; one sent more than this after its row was
# written (parked that long) is not found by the window rebuild.
DECIDED_BEFORE_SENT = timedelta(days=1)


class PretradeWindows(Protocol):
    """The pre-trade windows of a worker's accounts (`streams.execution.order_guard.OrderGuard`)."""

    def restore_since(self, label: str, now: datetime) -> datetime: ...

    def restore(self, label: str, rows: Iterable[SubmissionRow], now: datetime) -> int: ...


def reconcile_policy(settings: Settings) -> ReconcilePolicy:
    return ReconcilePolicy(
        account_timeout=settings.reconcile_account_timeout_seconds,
        pending_after=timedelta(seconds=settings.reconcile_pending_after_seconds),
        # Past the age limit the lane refuses to submit (checked right before the POST); the
        # margin covers a POST sent just before the limit that the broker has not answered yet.
        unsubmitted_after=timedelta(
            seconds=settings.max_decision_age_seconds + UNSUBMITTED_MARGIN_SECONDS
        ),
    )


class ReconciliationService:
    def __init__(
        self,
        settings: Settings,
        registry: AccountRegistry,
        *,
        repositories: RepositoryProvider,
        brokers: BrokerPool,
        board: StatusBoard,
        dead_letters: DeadLetters,
        owned_accounts: Callable[[], Sequence[str]],
        verified: Callable[[str], bool] = lambda label: True,
        mismatched: Callable[[str], bool] = lambda label: False,
        refresh_snapshot: Callable[[str], Any] | None = None,
        give_up: GiveUp = exit_worker,
        gates: LaneGates | None = None,
        trading_state: TradingStateSetter,
        windows: PretradeWindows | None = None,
        observe_order: Callable[[TradeUpdate], None] = lambda update: None,
    ) -> None:
        self.settings = settings
        self._windows = windows
        self._observe_order = observe_order
        self._give_up = give_up
        self.registry = registry
        self._repositories = repositories
        self._brokers = brokers
        self._board = board
        self._dead_letters = dead_letters
        self._owned = owned_accounts
        self._verified = verified
        self._mismatched = mismatched
        self._refresh_snapshot = refresh_snapshot
        self._reconciler: Reconciler | None = None
        self._lock = asyncio.Lock()
        self._gates = gates
        self._replay_locks: dict[str, asyncio.Lock] = {}
        self._replay_applier: OrderFeedApplier | None = None
        self._drift = DriftTracker(timedelta(seconds=settings.position_drift_grace_seconds))
        self._drift_report = DriftReport(
            board,
            trading_state,
            set_reducing=settings.position_drift_set_reducing,
        )
        self._tasks: set[asyncio.Task[object]] = set()

    def broker_orders_for(self, label: str) -> BrokerOrders | None:
        """The account's shared broker client (one request budget with its lane); None until its
        lane checked that the keys reach the account the label is pinned to."""
        account = self.registry.get(label)
        if account is None or not account.enabled or not self._verified(label):
            return None
        return self._brokers.for_account(account)

    def record_error(self, account: str, exc: BaseException) -> None:
        kind = getattr(getattr(exc, "kind", None), "value", None) or type(exc).__name__
        self._board.lane(account).record_error(f"reconcile:{kind}", str(exc))

    async def _snapshot(self, label: str) -> None:
        if self._refresh_snapshot is not None:
            await self._refresh_snapshot(label)

    async def reconciler(self) -> Reconciler:
        """Built on first use: it needs the Postgres pool, which is connected lazily."""
        async with self._lock:
            if self._reconciler is None:
                self._reconciler = Reconciler(
                    await self._repositories.get(),
                    self.broker_orders_for,
                    policy=reconcile_policy(self.settings),
                    refresh_snapshot=self._snapshot,
                    on_error=self.record_error,
                )
        return self._reconciler

    def applier(self) -> OrderFeedApplier:
        """Needs no database to be built: the pool opens on the first batch (inside its
        retries), so the agent starts while Postgres is down."""
        return OrderFeedApplier(
            _LazyStore(self._repositories),
            known_accounts=frozenset(self.registry.labels),
            dead_letter=self._dead_letters.event,
            request_reconcile=self.request,
            max_event_time_skew=timedelta(seconds=self.settings.max_event_time_skew_seconds),
            retry_seconds=self.settings.order_feed_retry_seconds,
            observe=self._observe_order,
        )

    async def apply_batches(
        self, batches: AsyncIterator[Sequence[Any]], dead_letter: DeadLetterEvent
    ) -> None:
        """Apply each batch of an account's re-keyed trade updates (the `account_updates` agent);
        see `apply_each_batch`."""
        held = held_until_handled(batches)
        await apply_each_batch(self.applier(), held, dead_letter, self._give_up)

    def owned(self) -> list[str]:
        """Enabled accounts whose partition is assigned to this worker right now."""
        return list(self._owned())

    async def reconcile_owned(self) -> None:
        """Every owned account concurrently, each bounded by its own time budget; then, for
        each owned lane reconciled at start, fill replay if an open order went quiet and the
        position check."""
        accounts = self.owned()
        if accounts:
            await (await self.reconciler()).reconcile_accounts(accounts)
            await asyncio.gather(*(self._watch_bounded(a) for a in accounts))

    def _started(self, label: str) -> bool:
        return self._gates is None or self._gates.state(label) is GateState.ready

    async def _watch_bounded(self, label: str) -> None:
        if not self._started(label):
            return  # its start-up reconciliation (which creates the baseline) comes first
        try:
            await asyncio.wait_for(
                self._watch(label), self.settings.reconcile_account_timeout_seconds
            )
        except Exception as exc:  # noqa: BLE001 - one account never stops the others
            log.warning(
                "fill replay / position check of %s failed: %s",
                label,
                type(exc).__name__,
                extra={"account": label},
            )
            self.record_error(label, exc)

    async def _watch(self, label: str) -> None:
        repo = await self._repositories.get()
        quiet = self.settings.fill_replay_quiet_seconds
        if quiet > 0:
            now = datetime.now(UTC)
            if quiet_orders(await repo.open_executions(label), now, timedelta(seconds=quiet)):
                await self.replay_fills(label, "quiet_open_orders")
        if self.settings.position_drift_enabled:
            await self.check_positions(label)

    # ---- reconciliation at start (issue #17 item 4)
    async def reconcile_at_start(self, label: str) -> dict[str, Any]:
        """One attempt: snapshot and pin check, REST reconciliation of executions and pending
        decisions, the account's open broker orders (folded, linked or adopted as external),
        then the fills since its cursor. Raises on any failure (the caller retries)."""
        account = self.registry.get(label)
        if account is None or not account.enabled:
            raise LookupError(f"no enabled account {label!r}")
        await self._snapshot(label)
        if not self._verified(label):
            raise AccountNotVerified(
                f"account {label!r}: keys not checked against its pin yet",
                database=not self._mismatched(label),  # unchecked: Postgres unreachable
            )
        reconciler = await self.reconciler()
        report = await reconciler.reconcile_account(label)
        if report.paused:
            raise AccountNotVerified(f"account {label!r}: broker request budget spent")
        broker = self._brokers.for_account(account)
        repo = await self._repositories.get()
        open_orders = await reconcile_open_orders(
            label,
            await broker.list_orders("open"),
            repo,
            execution_from=execution_from_rest,
            update_from=order_update_from_rest,
            now=datetime.now(UTC),
        )
        replay = await self.replay_fills(label, "start")
        restored = await self.restore_windows(label)
        return {
            "executions_fixed": report.executions_fixed,
            "decisions_recovered": report.decisions_recovered,
            "open_orders": open_orders.open_orders,
            "external_adopted": len(open_orders.adopted),
            "orders_linked": open_orders.linked,
            "fills_replayed": replay.fills,
            "orders_restored": restored,
        }

    async def restore_windows(self, label: str) -> int:
        """Rebuild the account's pre-trade windows (order rate, duplicate intent, the trading
        day's notional) from its orders that reached the broker, as Postgres has them (after
        the steps above recorded any order placed before a crash). The last step before the
        lane trades: a failure fails the attempt (retried; the lane stays `reconciling`)."""
        if self._windows is None:
            return 0
        repo = await self._repositories.get()
        now = datetime.now(UTC)
        since = self._windows.restore_since(label, now)
        rows = await repo.recent_submissions(label, since, since - DECIDED_BEFORE_SENT)
        return self._windows.restore(label, rows, now)

    # ---- fill replay (issue #17 item 6)
    def _applier_for_replay(self) -> OrderFeedApplier:
        if self._replay_applier is None:
            self._replay_applier = self.applier()
        return self._replay_applier

    async def replay_fills(self, label: str, trigger: str) -> ReplayReport:
        """The account's broker fills after its stored cursor, through the order-feed apply;
        one replay of an account at a time. Raises on broker or database failure."""
        account = self.registry.get(label)
        if account is None or not self._verified(label):
            raise AccountNotVerified(
                f"account {label!r}: keys not checked against its pin yet",
                database=not self._mismatched(label),  # unchecked: Postgres unreachable
            )
        broker = self._brokers.for_account(account)
        lock = self._replay_locks.setdefault(label, asyncio.Lock())
        async with lock:
            repo = await self._repositories.get()

            async def baseline(account_label: str) -> dict[str, Decimal]:
                held = position_quantities(await broker.positions())
                implied = await repo.implied_positions(account_label)
                return position_drift(held, implied, {})

            try:
                report = await replay_fills(
                    label,
                    broker,
                    repo,
                    self._applier_for_replay().apply_updates,
                    baseline=baseline,
                    max_pages=self.settings.fill_replay_max_pages,
                )
            except Exception:
                metrics.FILL_REPLAYS.labels(label, trigger, "error").inc()
                raise
        metrics.FILL_REPLAYS.labels(label, trigger, "ok").inc()
        metrics.FILLS_REPLAYED.labels(label).inc(report.fills)
        if report.fills or report.skipped:
            log.info(
                "fills replayed (%s)",
                trigger,
                extra={"account": label, "fills": report.fills, "skipped": len(report.skipped)},
            )
        return report

    # ---- positions over time (issue #17 item 5)
    async def check_positions(self, label: str) -> dict[str, Decimal]:
        """Broker positions against baseline + this system's fills; the confirmed drift."""
        account = self.registry.get(label)
        if account is None or not self._verified(label):
            return {}
        repo = await self._repositories.get()
        cursor = await repo.fill_cursor(label)
        if cursor is None:
            return {}  # no baseline yet: the start-up reconciliation creates it
        broker = self._brokers.for_account(account)
        held = position_quantities(await broker.positions())
        implied = await repo.implied_positions(label)
        drift = position_drift(held, implied, cursor.baseline_positions)
        confirmed = self._drift.observe(label, drift, datetime.now(UTC))
        await self._drift_report.publish(
            label, confirmed, self._drift.newly_reported(label, confirmed)
        )
        return confirmed

    async def request(self, account: str, reason: str) -> None:
        """Start reconciling `account` now (if this worker owns it); does not wait for it.
        Never raises: a request that cannot start (Postgres down) is logged; the timer
        reconciles the account anyway, and the batch carrying it is not failed for it."""
        if account not in self.owned():
            log.info("reconcile request for an account not owned here", extra={"account": account})
            return
        try:
            reconciler = await self.reconciler()
        except Exception as exc:  # noqa: BLE001 - see above
            log.warning(
                "reconcile request not started: %s", type(exc).__name__, extra={"account": account}
            )
            return
        reconciler.request(account, reason)
        if self._started(account):  # a gap in the trade updates: replay the account's fills
            task: asyncio.Task[object] = asyncio.create_task(self._replay_guarded(account))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _replay_guarded(self, account: str) -> object:
        """The replay a gap in the trade updates asks for. A transient failure (the account's
        request budget spent by the reconcile pass and snapshot that start with it, the broker
        or Postgres briefly away) is retried with backoff within the account's time budget: the
        gap may hold fills no other run would replay soon (the replay is idempotent)."""
        deadline = (
            asyncio.get_running_loop().time() + self.settings.reconcile_account_timeout_seconds
        )
        try:
            return await retry_transient(
                lambda: self.replay_fills(account, "reconcile_request"),
                "fill replay after a reconcile request",
                first_delay=0.5,
                deadline=deadline,
            )
        except Exception as exc:  # noqa: BLE001 - the quiet-order check and the next request retry
            log.warning(
                "fill replay after a reconcile request failed: %s",
                type(exc).__name__,
                extra={"account": account},
            )
            self.record_error(account, exc)
            return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()


async def apply_each_batch(
    applier: OrderFeedApplier,
    batches: AsyncIterator[Sequence[Any]],
    dead_letter: DeadLetterEvent,
    give_up: GiveUp,
) -> None:
    """Apply each batch; a batch is acked only once this loop's body for it completed (see
    `held_until_handled`), so a cancellation mid-apply (SIGTERM) leaves it unacked.
    Infrastructure failures were retried inside the batch until its budget
    (`TORGHUT_ORDER_FEED_RETRY_SECONDS`) ran out; then the worker gives up on the batch without
    acking it and leaves the process (`exit_worker`), so it is redelivered from the last commit;
    its valid events are never dead-lettered for it. Any other failure of a batch as a whole (a
    bug) dead-letters it event by event, and those events are acked."""
    async for events in batches:
        try:
            await applier.apply(events)
        except Exception as exc:
            if is_infrastructure(exc):
                give_up(
                    f"{ORDER_FEED_UNAVAILABLE}: a batch of {len(events)} trade updates could "
                    f"not be applied within its retry budget ({type(exc).__name__}); "
                    "exiting unacked so it is redelivered"
                )
                raise  # only reached when `give_up` returns (tests): never ack
            log.exception("order-feed batch failed; dead-lettering it")
            for event in events:
                await dead_letter(event, "order_feed_batch_failed", exc)


class AccountNotVerified(RuntimeError):
    """The account cannot be reconciled yet (its keys not checked, its budget spent).
    `database`: not checked because Postgres (where the pin is) cannot be reached."""

    def __init__(self, message: str, *, database: bool = False) -> None:
        super().__init__(message)
        self.database = database


def quiet_orders(
    executions: Sequence[ExecutionRow], now: datetime, quiet_after: timedelta
) -> list[ExecutionRow]:
    """Open executions with no broker event (nor REST state) for `quiet_after`: a gap in the
    trade updates is likely."""
    return [
        e
        for e in executions
        if e.alpaca_order_id is not None
        and e.last_event_ts is not None
        and now - e.last_event_ts >= quiet_after
    ]


class _LazyStore:
    """The order-feed store over the shared repository, connected on first use."""

    def __init__(self, repositories: RepositoryProvider) -> None:
        self._repositories = repositories

    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int:
        return await (await self._repositories.get()).append_order_events(rows)

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        return await (await self._repositories.get()).apply_order_update(update)
