"""The order feed's long-lived collaborators in a worker, created on first use."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from functools import cache

from streams.broker.pool import get_broker_pool
from streams.domain.accounts import AccountRegistry, load_registry
from streams.observability.status import board
from streams.order_feed.reconciler import BrokerOrders, ReconcilePolicy, Reconciler
from streams.persistence.dsn import asyncpg_dsn
from streams.persistence.repository import Repository
from streams.settings import Settings, get_settings

UNSUBMITTED_MARGIN_SECONDS = 60.0

_repository: Repository | None = None
_repository_lock = asyncio.Lock()


async def repository(settings: Settings | None = None) -> Repository:
    """One asyncpg-backed repository per worker process."""
    global _repository
    async with _repository_lock:
        if _repository is None:
            settings = settings or get_settings()
            dsn = asyncpg_dsn(settings.database_url.get_secret_value())
            _repository = await Repository.connect(dsn, pool_size=settings.database_pool_size)
    return _repository


async def close() -> None:
    """Close the repository pool (worker shutdown)."""
    global _repository
    repo, _repository = _repository, None
    if repo is not None:
        await repo.close()


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
