"""Order feed: trade updates v1 + v2 → attributed, re-keyed by account → applied per account.

`order_feed` reads both trade-update topics (either may be unset: v2 only is the Phase 4
cutover), normalises each record, attributes it to an account and re-keys it by `account_label`
onto the account-updates topic, co-partitioned with the decisions topic, so that each account's
updates are applied, in order, on the worker that runs the account's lane. `account_updates`
applies them in batches (store once by fingerprint, fold monotonically into the execution).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, cast

import faust
from mode import BaseSignalT

from agents.reconciler import request_reconcile
from schemas.codecs import DecodeError, decode_trade_update
from streams.app import app, settings
from streams.dlq import dead_letter_event
from streams.domain.order_feed import metrics
from streams.domain.order_feed.model import encode_record
from streams.domain.order_feed.normalise import MissingOrderIdentity, SourceCoordinates, normalise
from streams.order_feed import context
from streams.order_feed.applier import OrderFeedApplier
from streams.settings import Settings
from streams.topics import account_updates_topic
from tables.order_index import account_for

log = logging.getLogger(__name__)


def feed_topic_names(settings: Settings) -> list[str]:
    """v1 and v2 topics that are set: v2 only is the Phase 4 cutover, v1 only the old world."""
    return [n for n in (settings.order_feed_topic, settings.order_feed_topic_v2) if n]


FEED_TOPIC_NAMES = feed_topic_names(settings)


def order_owner(client_order_id: str | None, order_id: str | None) -> str | None:
    """The account that owns the client order id, from the order index the lanes write before
    submitting. Deliberately not the Alpaca order id: the client order id (the decision hash)
    has the account inside it, so it can never point at another account's order."""
    del order_id
    return account_for(client_order_id=client_order_id) if client_order_id else None


def _received_at(event: faust.EventT[Any]) -> datetime:
    timestamp = event.message.timestamp
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)


async def route(event: faust.EventT[Any]) -> None:
    """One v1/v2 record → the account-updates topic (key account_label), or a dead letter."""
    try:
        envelope = decode_trade_update(event.value)
    except DecodeError as exc:
        metrics.DROPPED.labels(exc.reason).inc()
        await dead_letter_event(event, exc.reason, exc)
        return
    message = event.message
    try:
        update = normalise(
            envelope,
            SourceCoordinates(message.topic, message.partition, message.offset),
            order_owner,
            settings.account_label,
            received_at=_received_at(event),
        )
    except MissingOrderIdentity as exc:
        metrics.DROPPED.labels(exc.reason).inc()
        await dead_letter_event(event, exc.reason, exc)
        return
    except Exception as exc:  # noqa: BLE001 - bad input never stops the feed
        metrics.DROPPED.labels("trade_update_invalid").inc()
        await dead_letter_event(event, "trade_update_invalid", exc)
        return
    # Not awaited to completion here: faust flushes the producer before it commits the offset.
    await account_updates_topic.send(
        key=update.account_label.encode("utf-8"), value=encode_record(update)
    )


if FEED_TOPIC_NAMES:
    feed_topic = app.topic(
        *FEED_TOPIC_NAMES,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )

    @app.agent(feed_topic, name="order_feed", concurrency=1)
    async def order_feed(stream: faust.StreamT[Any]) -> None:
        """Trade updates v1 + v2 → attributed and re-keyed by account_label."""
        async for event in stream.events():
            await route(event)


@app.agent(account_updates_topic, name="account_updates", concurrency=1)
async def account_updates(stream: faust.StreamT[Any]) -> None:
    """Each account's trade updates, in order, applied in batches to Postgres."""
    applier = OrderFeedApplier(
        await context.repository(settings),
        known_accounts=context.known_accounts(),
        dead_letter=dead_letter_event,
        request_reconcile=request_reconcile,
    )
    # `take_events` (events, not values: dead letters need their coordinates) is not on StreamT.
    async for events in cast(Any, stream).take_events(
        settings.order_feed_batch_size, within=settings.order_feed_batch_seconds
    ):
        try:
            await applier.apply(events)
        except Exception as exc:
            log.exception("order-feed batch failed; dead-lettering it")
            for event in events:
                await dead_letter_event(event, "order_feed_batch_failed", exc)


@app.on_before_shutdown.connect
async def close_order_feed(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kw: Any) -> None:
    await context.close()
