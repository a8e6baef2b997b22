"""Normalise a decoded v1/v2 envelope into a `TradeUpdate` and attribute it to an account.

Attribution precedence (DESIGN.md): payload `account_label` → order-level label → envelope
`accountLabel` → the account that owns the client order id (order index) → the default label.
The default label is a last resort and is counted as unattributed: such an event can only ever
match an execution of the default account (matching is account-scoped with AND).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.trade_update import TradeUpdateEnvelope
from streams.domain.order_state import event_fingerprint
from streams.domain.trade_updates.model import Attribution, TradeUpdate

# (client_order_id, alpaca order id) -> owning account label, or None when unknown.
OwnerLookup = Callable[[str | None, str | None], str | None]


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


def attribute(
    envelope: TradeUpdateEnvelope, owner_of: OwnerLookup, default_label: str
) -> tuple[str, Attribution]:
    """The account of an event and the evidence it came from."""
    payload = envelope.payload
    candidates = (
        (payload.account_label, Attribution.payload),
        (payload.order.account_label, Attribution.order),
        (envelope.account_label, Attribution.envelope),
    )
    for label, source in candidates:
        cleaned = _clean(label)
        if cleaned is not None:
            return cleaned, source
    owner = _clean(owner_of(payload.order.client_order_id, payload.order.id))
    if owner is not None:
        return owner, Attribution.order_index
    return default_label, Attribution.default


def normalise(
    envelope: TradeUpdateEnvelope,
    source: SourceCoordinates,
    owner_of: OwnerLookup,
    default_label: str,
    received_at: datetime,
    raw_payload: dict[str, Any] | None = None,
) -> TradeUpdate:
    """One `TradeUpdate`; raises `MissingOrderIdentity` when no order is named.

    `received_at` (the Kafka record time) stands in for the event time only when neither the
    event, its order nor the envelope carries one. `raw_payload` is the payload as it arrived
    (stored verbatim with the event row); the parsed payload stands in when it is not given.
    """
    payload = envelope.payload
    order = payload.order
    order_id = _clean(order.id)
    client_order_id = _clean(order.client_order_id)
    if order_id is None and client_order_id is None:
        raise MissingOrderIdentity("trade update names no order id nor client order id")
    account, attribution = attribute(envelope, owner_of, default_label)
    event_ts = envelope.event_time or received_at
    execution_id = _clean(payload.execution_id)
    fingerprint = event_fingerprint(
        account_label=account,
        order_id=order_id,
        client_order_id=client_order_id,
        event=payload.event,
        status=order.status,
        event_ts=event_ts,
        execution_id=execution_id,
        qty=payload.qty,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
    )
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
