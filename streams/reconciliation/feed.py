"""The order feed's parts of one worker: the router (attribution, re-keying) and the sweep of
held events, wired to the registry, the order index and the Postgres pool."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import faust

from streams.dlq import DeadLetters
from streams.domain.accounts import AccountRegistry
from streams.persistence.rows import HeldEventRow
from streams.persistence.shared import RepositoryProvider
from streams.reconciliation.attribution import Attributor
from streams.reconciliation.router import TradeUpdateRouter
from streams.reconciliation.unattributed import HeldStore, UnattributedSweep
from streams.settings import Settings

# (client order id, alpaca order id) → label in the order index (`FaustOrderIndex.account_for`).
AccountFor = Callable[..., str | None]


@dataclass(frozen=True)
class OrderFeed:
    router: TradeUpdateRouter
    sweep: UnattributedSweep


def build_order_feed(
    settings: Settings,
    registry: AccountRegistry,
    *,
    account_for: AccountFor,
    repositories: RepositoryProvider,
    account_updates: faust.TopicT,
    dead_letters: DeadLetters,
) -> OrderFeed:
    async def order_owners(client_order_id: str | None, order_id: str | None) -> list[str]:
        return await (await repositories.get()).order_owners(client_order_id, order_id)

    async def hold(row: HeldEventRow) -> bool:
        return await (await repositories.get()).hold_unattributed(row)

    async def store() -> HeldStore:
        return await repositories.get()

    attributor = Attributor(
        known_accounts=frozenset(registry.labels),
        index=lambda cid, oid: account_for(client_order_id=cid, alpaca_order_id=oid),
        query=order_owners,
        multi_account=registry.multi_account,
        default_label=settings.account_label,
    )
    router = TradeUpdateRouter(
        attributor=attributor,
        hold=hold,
        account_updates=account_updates,
        dead_letters=dead_letters,
        max_event_time_skew=timedelta(seconds=settings.max_event_time_skew_seconds),
    )
    sweep = UnattributedSweep(router=router, store=store, dead_letters=dead_letters)
    return OrderFeed(router, sweep)
