"""Prices from TA signals (``torghut.ta.signals.v1`` records, nested or ClickHouse-flattened)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .formats import to_decimal


def _num(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = to_decimal(value)
    except ValueError:
        return None
    return number if number > 0 else None


def _nested(signal: Mapping[str, Any], group: str, name: str) -> Any:
    inner = signal.get(group)
    if isinstance(inner, Mapping) and name in inner:
        return inner[name]
    return signal.get(f"{group}_{name}")


def price_from_signal(signal: Mapping[str, Any]) -> Decimal | None:
    """The reference system's sizing price: price/close, else vwap session, else vwap 5m,
    else the bid/ask mid. None when the signal carries none of them."""
    for value in (
        signal.get("price"),
        signal.get("close"),
        _nested(signal, "vwap", "session"),
        _nested(signal, "vwap", "w5m"),
    ):
        number = _num(value)
        if number is not None:
            return number
    bid = _num(_nested(signal, "imbalance", "bid_px"))
    ask = _num(_nested(signal, "imbalance", "ask_px"))
    if bid is not None and ask is not None:
        return (bid + ask) / 2
    return None
