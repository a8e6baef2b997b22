"""Broker REST order objects (Alpaca JSON) → repository rows, for the reconciler."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas.trade_update import AlpacaOrder
from streams.domain.trade_updates.validate import check_order_numbers
from streams.persistence.rows import ExecutionRow, OrderUpdateRow


def parse_order(order: Mapping[str, Any]) -> AlpacaOrder:
    """Validate the fields the project uses; raises `pydantic.ValidationError`, or
    `InvalidTradeUpdate` (a ValueError) for NaN, infinite, negative or unstorable numbers."""
    parsed = AlpacaOrder.model_validate(dict(order))
    check_order_numbers(parsed)
    return parsed


def _as_of(order: AlpacaOrder, fallback: datetime) -> datetime:
    return order.updated_at or order.submitted_at or order.created_at or fallback


def order_update_from_rest(
    account_label: str, raw: Mapping[str, Any], fetched_at: datetime
) -> OrderUpdateRow:
    """The broker's current state of one order of `account_label`, to fold in monotonically."""
    order = parse_order(raw)
    return OrderUpdateRow(
        account_label=account_label,
        status=order.status,
        event_ts=_as_of(order, fetched_at),
        alpaca_order_id=order.id,
        client_order_id=order.client_order_id,
        filled_qty=order.filled_qty,
        filled_avg_price=order.filled_avg_price,
        raw_order=dict(raw),
    )


def execution_from_rest(
    account_label: str, raw: Mapping[str, Any], fetched_at: datetime
) -> ExecutionRow:
    """An execution row for a broker order found by client order id (a crash after submit)."""
    order = parse_order(raw)
    if not order.client_order_id:
        raise ValueError("a broker order without client_order_id cannot be linked to a decision")
    return ExecutionRow(
        account_label=account_label,
        client_order_id=order.client_order_id,
        symbol=order.symbol or "",
        side=order.side or "",
        order_type=order.order_type or order.type or "market",
        time_in_force=order.time_in_force or "day",
        submitted_qty=order.qty if order.qty is not None else Decimal(0),
        status=order.status,
        alpaca_order_id=order.id,
        filled_qty=order.filled_qty or Decimal(0),
        avg_fill_price=order.filled_avg_price,
        raw_order=dict(raw),
        last_event_ts=_as_of(order, fetched_at),
    )
