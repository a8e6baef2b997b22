"""Order feed: trade updates v1 + v2 → attributed, re-keyed by account → applied per account.

`order_feed` reads both trade-update topics (either may be unset: v2 only is the Phase 4
cutover) and routes each record to the account-updates topic (`TradeUpdateRouter`);
`account_updates` applies each account's updates in batches on the worker that runs its lane
(`OrderFeedApplier`).
"""

from __future__ import annotations

from typing import Any, cast

import faust

from streams.app import app, settings, topics

if topics.trade_updates is not None:

    @app.agent(topics.trade_updates, name="order_feed", concurrency=1)
    async def order_feed(stream: faust.StreamT[Any]) -> None:
        """Trade updates v1 + v2 → attributed and re-keyed by account_label."""
        await app.context.router.run(stream)


@app.agent(topics.account_updates, name="account_updates", concurrency=1)
async def account_updates(stream: faust.StreamT[Any]) -> None:
    """Each account's trade updates, in order, applied in batches to Postgres."""
    context = app.context
    # `take_events` (events, not values: dead letters need their coordinates) is not on StreamT.
    batches = cast(Any, stream).take_events(
        settings.order_feed_batch_size, within=settings.order_feed_batch_seconds
    )
    await context.reconciliation.apply_batches(batches, context.dead_letters.event)
