"""Trade-update envelopes v1 and v2: Alpaca's payload verbatim, tolerant of new fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from schemas.codecs import DecodeError, decode_trade_update, encode_trade_update
from schemas.trade_update import TradeUpdateEnvelope

ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
CLIENT_ID = "a" * 64


def alpaca_order(**changes: Any) -> dict[str, Any]:
    """An order as Alpaca sends it inside `trade_updates` (decimal strings, nanosecond times)."""
    order = {
        "id": ORDER_ID,
        "client_order_id": CLIENT_ID,
        "created_at": "2026-01-05T15:00:00.123456789Z",
        "updated_at": "2026-01-05T15:00:01.5Z",
        "submitted_at": "2026-01-05T15:00:00.2Z",
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "AAPL",
        "asset_class": "us_equity",
        "notional": None,
        "qty": "10",
        "filled_qty": "4",
        "filled_avg_price": "412.29",
        "order_class": "",
        "order_type": "market",
        "type": "market",
        "side": "buy",
        "time_in_force": "day",
        "limit_price": None,
        "stop_price": None,
        "status": "partially_filled",
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "subtag": None,
        "source": None,
    }
    order.update(changes)
    return order


def envelope(version: int = 1, label: str | None = None, **payload_changes: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "event": "partial_fill",
        "execution_id": "5f0b8a0e-a3d8-4c47-9d4a-8bd9f1b4f4a1",
        "timestamp": "2026-01-05T15:00:01.500000123Z",
        "price": "412.29",
        "qty": "4",
        "position_qty": "4",
        "order": alpaca_order(),
    }
    if version == 2:
        payload["account_label"] = label
    payload.update(payload_changes)
    return {
        "ingestTs": "2026-01-05T15:00:01.600Z",
        "eventTs": "2026-01-05T15:00:01.500Z",
        "feed": "alpaca",
        "channel": "trade_updates",
        "symbol": "AAPL",
        "seq": 3,
        "payload": payload,
        "accountLabel": label,
        "isFinal": True,
        "source": "ws",
        "version": version,
    }


def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_v1_envelope_decodes_with_decimals_and_utc_times() -> None:
    env = decode_trade_update(raw(envelope()))
    assert env.version == 1 and env.account_label is None
    assert env.declared_account_label is None
    p = env.payload
    assert (p.event, p.price, p.qty, p.position_qty) == (
        "partial_fill",
        Decimal("412.29"),
        Decimal("4"),
        Decimal("4"),
    )
    assert p.order.filled_qty == Decimal("4") and p.order.filled_avg_price == Decimal("412.29")
    assert p.order.id == ORDER_ID and p.order.client_order_id == CLIENT_ID
    assert p.order.created_at == datetime(2026, 1, 5, 15, 0, 0, 123456, tzinfo=UTC)
    assert env.event_time == datetime(2026, 1, 5, 15, 0, 1, 500000, tzinfo=UTC)
    assert env.seq == 3 and env.is_final is True
    assert not p.order.is_terminal and p.order.has_identity


def test_v2_labels_in_attribution_order() -> None:
    doc = envelope(version=2, label="alpha")
    assert decode_trade_update(raw(doc)).declared_account_label == "alpha"
    doc["payload"]["account_label"] = None
    doc["payload"]["order"]["account_label"] = "beta"
    assert decode_trade_update(raw(doc)).declared_account_label == "beta"
    doc["payload"]["order"]["account_label"] = None
    assert decode_trade_update(raw(doc)).declared_account_label == "alpha"


def test_unknown_fields_are_ignored_everywhere() -> None:
    doc = envelope()
    doc["brandNew"] = {"x": 1}
    doc["payload"]["new_payload_field"] = [1, 2]
    doc["payload"]["order"]["new_order_field"] = "x"
    assert decode_trade_update(raw(doc)).payload.order.symbol == "AAPL"


def test_encode_decode_round_trip_keeps_camel_case_and_decimals() -> None:
    env = decode_trade_update(raw(envelope(version=2, label="alpha")))
    encoded = encode_trade_update(env)
    as_json = json.loads(encoded)
    assert as_json["accountLabel"] == "alpha" and "account_label" not in as_json
    assert as_json["payload"]["price"] == "412.29"
    assert as_json["payload"]["order"]["created_at"] == "2026-01-05T15:00:00.123456Z"
    assert decode_trade_update(encoded) == env


def test_model_accepts_python_names_too() -> None:
    env = TradeUpdateEnvelope.model_validate(
        {
            "payload": {"event": "new", "order": {"id": ORDER_ID, "status": "new"}},
            "version": 2,
            "account_label": "alpha",
        }
    )
    assert env.account_label == "alpha" and env.feed == "alpaca"
    assert env.event_time is None


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("payload"), "payload"),
        (lambda d: d["payload"].pop("order"), "payload.order"),
        (lambda d: d["payload"].pop("event"), "payload.event"),
        (lambda d: d["payload"].update(price="abc"), "payload.price"),
        # NaN passes the schema on purpose: the numeric rule names it (`invalid_number`).
        (lambda d: d["payload"].update(qty="1,5"), "payload.qty"),
        (lambda d: d["payload"]["order"].update(filled_qty=[1]), "payload.order.filled_qty"),
        (lambda d: d["payload"]["order"].pop("status"), "payload.order.status"),
        (lambda d: d["payload"].update(timestamp="yesterday"), "payload.timestamp"),
    ],
)
def test_fields_the_project_uses_are_strict(mutate: Any, field: str) -> None:
    doc = envelope()
    mutate(doc)
    with pytest.raises(DecodeError) as caught:
        decode_trade_update(raw(doc))
    assert caught.value.reason == "schema_invalid"
    assert field in str(caught.value)


def test_terminal_statuses() -> None:
    doc = envelope(event="fill")
    doc["payload"]["order"]["status"] = "filled"
    assert decode_trade_update(raw(doc)).payload.order.is_terminal
