"""Shape `TradeUpdate`s into repository rows, and dedupe a batch before it reaches Postgres."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.domain.trade_updates.model import TradeUpdate
from streams.persistence.rows import OrderEventRow, OrderUpdateRow


def dedupe_batch(updates: Sequence[TradeUpdate]) -> tuple[list[TradeUpdate], int]:
    """First occurrence of every fingerprint, in arrival order, and how many copies were dropped.

    The v1 and v2 copies of one event usually travel in the same batch; dropping them here
    saves a round trip, the unique fingerprint in Postgres catches the rest.
    """
    seen: set[str] = set()
    unique: list[TradeUpdate] = []
    for update in updates:
        if update.fingerprint not in seen:
            seen.add(update.fingerprint)
            unique.append(update)
    return unique, len(updates) - len(unique)


def event_row(update: TradeUpdate) -> OrderEventRow:
    return OrderEventRow(
        event_fingerprint=update.fingerprint,
        account_label=update.account_label,
        source_topic=update.source_topic,
        source_partition=update.source_partition,
        source_offset=update.source_offset,
        event_ts=update.event_ts,
        alpaca_order_id=update.order_id,
        client_order_id=update.client_order_id,
        symbol=update.symbol,
        event_type=update.event,
        status=update.status,
        execution_id_alpaca=update.execution_id,
        qty=update.qty,
        price=update.price,
        filled_qty=update.filled_qty,
        filled_avg_price=update.filled_avg_price,
        raw=update.raw,
    )


def order_update_row(update: TradeUpdate) -> OrderUpdateRow:
    order: Any = update.raw.get("order")
    return OrderUpdateRow(
        account_label=update.account_label,
        status=update.status or "unknown",
        event_ts=update.event_ts,
        alpaca_order_id=update.order_id,
        client_order_id=update.client_order_id,
        filled_qty=update.filled_qty,
        filled_avg_price=update.filled_avg_price,
        raw_order=order if isinstance(order, dict) else None,
    )
