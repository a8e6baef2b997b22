"""Alpaca trade-update data and forwarder envelopes for order-feed tests."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.trade_update import TradeUpdateEnvelope
from streams.forwarder.envelope import envelope

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def order(
    *,
    order_id: str | None = "61e69015-8549-4bfd-b9c3-01e75843f47d",
    client_order_id: str | None = "c" * 64,
    status: str = "filled",
    filled_qty: str = "10",
    filled_avg_price: str | None = "101.5",
    qty: str = "10",
    symbol: str = "AAPL",
    **extra: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": order_id,
        "client_order_id": client_order_id,
        "symbol": symbol,
        "side": "buy",
        "qty": qty,
        "filled_qty": filled_qty,
        "filled_avg_price": filled_avg_price,
        "status": status,
        "type": "market",
        "time_in_force": "day",
        "created_at": "2026-03-02T14:59:59.000000Z",
        "updated_at": "2026-03-02T15:00:00.100000Z",
        "submitted_at": "2026-03-02T14:59:59.000000Z",
        **extra,
    }
    return {k: v for k, v in out.items() if v is not None}


def data(
    event: str = "fill",
    *,
    execution_id: str | None = None,
    timestamp: str = "2026-03-02T15:00:00.123456Z",
    qty: str | None = "10",
    price: str | None = "101.5",
    **order_fields: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "event": event,
        "execution_id": execution_id or str(uuid.uuid4()),
        "timestamp": timestamp,
        "order": order(**order_fields),
    }
    if qty is not None:
        out["qty"] = qty
        out["price"] = price
        out["position_qty"] = qty
    return out


def v1(d: dict[str, Any], seq: int = 1) -> dict[str, Any]:
    return envelope(d, seq=seq, ingest_ts=T0, account_label=None, version=1)


def v2(d: dict[str, Any], label: str, seq: int = 1) -> dict[str, Any]:
    return envelope(d, seq=seq, ingest_ts=T0, account_label=label, version=2)


def parse(env: dict[str, Any]) -> TradeUpdateEnvelope:
    return TradeUpdateEnvelope.model_validate_json(json.dumps(env))
