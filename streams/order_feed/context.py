"""The order feed's long-lived collaborators in a worker, created on first use."""

from __future__ import annotations

from datetime import timedelta
from functools import cache

from streams.broker.pool import get_broker_pool
from streams.domain.accounts import AccountRegistry, load_registry
from streams.observability.status import board
from streams.order_feed.reconciler import BrokerOrders, ReconcilePolicy, Reconciler
from streams.persistence.repository import Repository
from streams.persistence.shared import worker_repositories
from streams.settings import Settings, get_settings

UNSUBMITTED_MARGIN_SECONDS = 60.0


async def repository(settings: Settings | None = None) -> Repository:
    """The worker's shared repository (one asyncpg pool with the lanes)."""
    return await worker_repositories().get()


async def close() -> None:
    """Close the shared repository pool (worker shutdown; idempotent)."""
    await worker_repositories().close()


@cache
def registry() -> AccountRegistry:
    return load_registry(get_settings(), strict=False)


def known_accounts() -> frozenset[str]:
    return frozenset(registry().labels)


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


def record_reconcile_error(account: str, exc: BaseException) -> None:
    kind = getattr(getattr(exc, "kind", None), "value", None) or type(exc).__name__
    board.lane(account).record_error(f"reconcile:{kind}", str(exc))


def broker_orders_for(label: str) -> BrokerOrders | None:
    """The account's shared broker client (one request budget with its lane)."""
    account = registry().get(label)
    if account is None or not account.enabled:
        return None
    return get_broker_pool().for_account(account)


async def refresh_snapshot(label: str) -> None:
    """The lanes' own snapshot refresh (one code path, one request budget), when lanes run."""
    from streams.execution.runtime import lane_service_if_built

    service = lane_service_if_built()
    if service is not None:
        await service.refresh_snapshots([label])


_reconciler: Reconciler | None = None


async def reconciler() -> Reconciler:
    global _reconciler
    if _reconciler is None:
        settings = get_settings()
        _reconciler = Reconciler(
            await repository(settings),
            broker_orders_for,
            policy=reconcile_policy(settings),
            refresh_snapshot=refresh_snapshot,
            on_error=record_reconcile_error,
        )
    return _reconciler
