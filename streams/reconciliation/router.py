"""Trade updates v1 + v2 → attributed to an account and re-keyed by `account_label`.

Each record is normalised, attributed to an account (payload → order → envelope → the order
index → the default label) and sent to the account-updates topic, co-partitioned with the
decisions topic, so that each account's updates are applied, in order, on the worker that runs
the account's lane. A record that cannot be used becomes a dead letter with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import faust

from schemas.codecs import DecodeError, decode_trade_update
from streams.dlq import DeadLetters
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.model import encode_record
from streams.domain.trade_updates.normalise import (
    MissingOrderIdentity,
    SourceCoordinates,
    normalise,
)

# client order id → the account that owns it, or None (the order index the lanes write).
OwnerOf = Callable[[str], str | None]


def _received_at(event: faust.EventT[Any]) -> datetime:
    timestamp = event.message.timestamp
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)


class TradeUpdateRouter:
    def __init__(
        self,
        *,
        owner_of: OwnerOf,
        default_label: str,
        account_updates: faust.TopicT,
        dead_letters: DeadLetters,
    ) -> None:
        self._owner_of = owner_of
        self._default_label = default_label
        self._out = account_updates
        self._dead_letters = dead_letters

    def order_owner(self, client_order_id: str | None, order_id: str | None) -> str | None:
        """The account that owns the client order id, from the order index the lanes write
        before submitting. Deliberately not the Alpaca order id: the client order id (the
        decision hash) has the account inside it, so it can never point at another account's
        order."""
        del order_id
        return self._owner_of(client_order_id) if client_order_id else None

    async def run(self, stream: faust.StreamT[Any]) -> None:
        """The `order_feed` agent's loop: every record, in order."""
        async for event in stream.events():
            await self.route(event)

    async def route(self, event: faust.EventT[Any]) -> None:
        """One v1/v2 record → the account-updates topic (key account_label), or a dead letter."""
        try:
            envelope = decode_trade_update(event.value)
        except DecodeError as exc:
            metrics.DROPPED.labels(exc.reason).inc()
            await self._dead_letters.event(event, exc.reason, exc)
            return
        message = event.message
        try:
            update = normalise(
                envelope,
                SourceCoordinates(message.topic, message.partition, message.offset),
                self.order_owner,
                self._default_label,
                received_at=_received_at(event),
            )
        except MissingOrderIdentity as exc:
            metrics.DROPPED.labels(exc.reason).inc()
            await self._dead_letters.event(event, exc.reason, exc)
            return
        except Exception as exc:  # noqa: BLE001 - bad input never stops the feed
            metrics.DROPPED.labels("trade_update_invalid").inc()
            await self._dead_letters.event(event, "trade_update_invalid", exc)
            return
        # Guarded and awaited to delivery: a record that cannot be produced is dead-lettered
        # (too large) or stops the worker before this event is acked (Kafka unavailable).
        await self._dead_letters.produce(
            event,
            lambda: self._out.send(
                key=update.account_label.encode("utf-8"), value=encode_record(update)
            ),
            "account updates",
        )
