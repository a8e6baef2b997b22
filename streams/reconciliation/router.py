"""Trade updates v1 + v2 → checked, attributed to an account and re-keyed by `account_label`.

Each record is decoded, checked (event time within the allowed skew, numbers finite and not
negative, labels of the registry: `streams.domain.trade_updates.validate`), attributed
(`Attributor`: labels → order index → Postgres → held / default) and sent to the
account-updates topic, co-partitioned with the decisions topic, so that each account's updates
are applied, in order, on the worker that runs the account's lane. A record that cannot be used
becomes a dead letter with its reason; a v1 record of no known account yet (multi-account mode)
is held in `unattributed_order_events` and handed to its account by the sweep
(`streams.reconciliation.unattributed`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from schemas.codecs import DecodeError, decode_trade_update
from schemas.trade_update import TradeUpdateEnvelope
from streams.compat import each_event_acked_when_done
from streams.dlq import DeadLetters
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.model import TradeUpdate, encode_record
from streams.domain.trade_updates.normalise import (
    MissingOrderIdentity,
    SourceCoordinates,
    held_event,
    normalise,
    order_identity,
)
from streams.domain.trade_updates.validate import InvalidTradeUpdate, check_envelope
from streams.errors import retry_transient
from streams.persistence.rows import HeldEventRow
from streams.reconciliation.attribution import Attributor

log = logging.getLogger(__name__)

Hold = Callable[[HeldEventRow], Awaitable[bool]]
Clock = Callable[[], datetime]


def _received_at(event: faust.EventT[Any]) -> datetime:
    timestamp = event.message.timestamp
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)


class TradeUpdateRouter:
    def __init__(
        self,
        *,
        attributor: Attributor,
        hold: Hold,
        account_updates: faust.TopicT,
        dead_letters: DeadLetters,
        max_event_time_skew: timedelta,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        self.attributor = attributor
        self._hold = hold
        self._out = account_updates
        self._dead_letters = dead_letters
        self._skew = max_event_time_skew
        self._clock = clock

    async def run(self, stream: faust.StreamT[Any]) -> None:
        """The `order_feed` agent's loop: every record, in order, acked once routed."""
        await each_event_acked_when_done(stream, self.route)

    async def route(self, event: faust.EventT[Any]) -> None:
        """One v1/v2 record → the account-updates topic (key account_label), held, or a dead
        letter. Never raises for bad input."""
        try:
            envelope = decode_trade_update(event.value)
        except DecodeError as exc:
            await self._drop(event, exc.reason, exc)
            return
        message = event.message
        source = SourceCoordinates(message.topic, message.partition, message.offset)
        received_at = _received_at(event)
        try:
            update = await self.prepare(envelope, source, received_at)
        except (InvalidTradeUpdate, MissingOrderIdentity) as exc:
            await self._drop(event, exc.reason, exc)
            return
        except Exception as exc:  # noqa: BLE001 - bad input never stops the feed
            await self._drop(event, "trade_update_invalid", exc)
            return
        if update is not None:
            # Guarded and awaited to delivery: a record that cannot be produced is dead-lettered
            # (too large) or stops the worker before this event is acked (Kafka unavailable).
            await self._dead_letters.produce(event, lambda: self.publish(update), "account updates")
            return
        try:
            raw = json.loads(bytes(event.value))
            await self.hold(held_event(envelope, source, received_at, raw))
        except Exception as exc:  # noqa: BLE001 - not storable: keep it in the DLQ instead
            await self._drop(event, "unattributed_hold_failed", exc)

    async def prepare(
        self, envelope: TradeUpdateEnvelope, source: SourceCoordinates, received_at: datetime
    ) -> TradeUpdate | None:
        """The checked, attributed update; None when no account is known yet (hold it).
        Raises `InvalidTradeUpdate` / `MissingOrderIdentity` (dead letters)."""
        check_envelope(envelope, self._clock(), self._skew)
        order_identity(envelope)
        owner = await self.attributor.owner(envelope)
        if owner is None:
            return None
        return normalise(envelope, source, owner.label, owner.attribution, received_at)

    async def hold(self, row: HeldEventRow) -> None:
        """Keep the event under no account. Waits while Postgres is down (the offset is not
        committed meanwhile, so nothing is lost; lag shows it)."""
        held = await retry_transient(lambda: self._hold(row), "hold_unattributed")
        metrics.UNATTRIBUTED.inc()
        if held:
            log.info(
                "trade update held: no account owns its order yet",
                extra={"client_order_id": row.client_order_id, "order_id": row.alpaca_order_id},
            )

    async def publish(self, update: TradeUpdate) -> Any:
        """Send the update to its account's partition; returns the delivery future."""
        return await self._out.send(
            key=update.account_label.encode("utf-8"), value=encode_record(update)
        )

    async def _drop(self, event: faust.EventT[Any], reason: str, exc: BaseException) -> None:
        metrics.DROPPED.labels(reason).inc()
        await self._dead_letters.event(event, reason, exc)
