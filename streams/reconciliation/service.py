"""The worker's reconciliation: REST reconciliation and trade-update batches of owned accounts.

An account is reconciled by the worker that owns it (`streams.ownership`): the one running its
lane, where its re-keyed trade updates (and reconcile requests) arrive too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from streams.broker.pool import BrokerPool
from streams.compat import held_until_handled
from streams.dlq import DeadLetters
from streams.domain.accounts import AccountRegistry
from streams.errors import exit_worker, is_infrastructure
from streams.observability.status import StatusBoard
from streams.persistence.rows import ApplyResult, OrderEventRow, OrderUpdateRow
from streams.persistence.shared import RepositoryProvider
from streams.reconciliation.applier import OrderFeedApplier
from streams.reconciliation.reconciler import BrokerOrders, ReconcilePolicy, Reconciler
from streams.settings import Settings

log = logging.getLogger(__name__)

DeadLetterEvent = Callable[[Any, str, BaseException], Awaitable[None]]
GiveUp = Callable[[str], None]
ORDER_FEED_UNAVAILABLE = "order_feed_unavailable"

UNSUBMITTED_MARGIN_SECONDS = 60.0


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
        refresh_snapshot: Callable[[str], Any] | None = None,
        give_up: GiveUp = exit_worker,
    ) -> None:
        self.settings = settings
        self._give_up = give_up
        self.registry = registry
        self._repositories = repositories
        self._brokers = brokers
        self._board = board
        self._dead_letters = dead_letters
        self._owned = owned_accounts
        self._verified = verified
        self._refresh_snapshot = refresh_snapshot
        self._reconciler: Reconciler | None = None
        self._lock = asyncio.Lock()

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
        """Every owned account concurrently, each bounded by its own time budget."""
        accounts = self.owned()
        if accounts:
            await (await self.reconciler()).reconcile_accounts(accounts)

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


class _LazyStore:
    """The order-feed store over the shared repository, connected on first use."""

    def __init__(self, repositories: RepositoryProvider) -> None:
        self._repositories = repositories

    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int:
        return await (await self._repositories.get()).append_order_events(rows)

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        return await (await self._repositories.get()).apply_order_update(update)
