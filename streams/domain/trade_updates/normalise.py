"""Normalise a decoded v1/v2 envelope into a `TradeUpdate` of an account already decided.

Attribution (`streams.reconciliation.attribution`): payload `account_label` → order-level label
→ envelope `accountLabel` (each checked against the registry) → the owner of the order (order
index, then Postgres) → in multi-account mode held unattributed, in single-account mode the
default label. This module only shapes the update and its fingerprint.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.trade_update import TradeUpdateEnvelope
from streams.domain.order_state import event_fingerprint
from streams.domain.trade_updates.model import Attribution, TradeUpdate
from streams.persistence.rows import HeldEventRow


class MissingOrderIdentity(ValueError):
    """The event names no order (neither order id nor client order id): it cannot be applied."""

    reason = "missing_order_identity"


@dataclass(frozen=True, slots=True)
class SourceCoordinates:
    topic: str
    partition: int | None = None
    offset: int | None = None


def _clean(label: str | None) -> str | None:
    label = (label or "").strip()
    return label or None


def order_identity(envelope: TradeUpdateEnvelope) -> tuple[str | None, str | None]:
    """(alpaca order id, client order id); raises `MissingOrderIdentity` when neither is set."""
    order = envelope.payload.order
    order_id, client_order_id = _clean(order.id), _clean(order.client_order_id)
    if order_id is None and client_order_id is None:
        raise MissingOrderIdentity("trade update names no order id nor client order id")
    return order_id, client_order_id


def _fingerprint(envelope: TradeUpdateEnvelope, account: str, event_ts: datetime) -> str:
    payload = envelope.payload
    order_id, client_order_id = order_identity(envelope)
    return event_fingerprint(
        account_label=account,
        order_id=order_id,
        client_order_id=client_order_id,
        event=payload.event,
        status=payload.order.status,
        event_ts=event_ts,
        execution_id=_clean(payload.execution_id),
        qty=payload.qty,
        filled_qty=payload.order.filled_qty,
        filled_avg_price=payload.order.filled_avg_price,
    )


def held_event(
    envelope: TradeUpdateEnvelope,
    source: SourceCoordinates,
    received_at: datetime,
    raw_envelope: dict[str, Any],
) -> HeldEventRow:
    """The row that keeps an event of no known account (no label inside its fingerprint)."""
    order_id, client_order_id = order_identity(envelope)
    event_ts = envelope.event_time or received_at
    return HeldEventRow(
        event_fingerprint=_fingerprint(envelope, "", event_ts),
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        alpaca_order_id=order_id,
        client_order_id=client_order_id,
        symbol=envelope.order_symbol,
        event_type=envelope.payload.event,
        event_ts=event_ts,
        envelope=raw_envelope,
    )


def normalise(
    envelope: TradeUpdateEnvelope,
    source: SourceCoordinates,
    account: str,
    attribution: Attribution,
    received_at: datetime,
    raw_payload: dict[str, Any] | None = None,
) -> TradeUpdate:
    """One `TradeUpdate` of `account`; raises `MissingOrderIdentity` when no order is named.

    `received_at` (the Kafka record time) stands in for the event time only when neither the
    event, its order nor the envelope carries one. `raw_payload` is the payload as it arrived
    (stored verbatim with the event row); the parsed payload stands in when it is not given.
    """
    payload = envelope.payload
    order = payload.order
    order_id, client_order_id = order_identity(envelope)
    event_ts = envelope.event_time or received_at
    execution_id = _clean(payload.execution_id)
    fingerprint = _fingerprint(envelope, account, event_ts)
    return TradeUpdate(
        account_label=account,
        attribution=attribution,
        fingerprint=fingerprint,
        event=payload.event,
        event_ts=event_ts,
        order_id=order_id,
        client_order_id=client_order_id,
        status=order.status,
        symbol=envelope.order_symbol,
        side=order.side,
        execution_id=execution_id,
        qty=payload.qty,
        price=payload.price,
        position_qty=payload.position_qty,
        order_qty=order.qty,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        version=envelope.version,
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        raw=raw_payload if raw_payload is not None else payload.model_dump(mode="json"),
    )
