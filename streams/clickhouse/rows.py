"""`ta_signals` rows <-> `TaSignal`: the flattened columns and the nested Avro-shaped record."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from schemas.common import iso_millis, to_utc
from schemas.ta_signal import TaSignal
from streams.domain.ch_cursor import RowKey

SIGNAL_COLUMNS: tuple[str, ...] = (
    "symbol",
    "event_ts",
    "seq",
    "ingest_ts",
    "is_final",
    "source",
    "window_size",
    "window_step",
    "window_start",
    "window_end",
    "version",
    "macd",
    "macd_signal",
    "macd_hist",
    "ema12",
    "ema26",
    "rsi14",
    "boll_mid",
    "boll_upper",
    "boll_lower",
    "vwap_session",
    "vwap_w5m",
    "imbalance_spread",
    "imbalance_bid_px",
    "imbalance_ask_px",
    "imbalance_bid_sz",
    "imbalance_ask_sz",
    "vol_realized_w60s",
)

# Nested record -> (its fields in TaSignal, the columns they come from). A record is present only
# when every required column is non-null; optional ones may be null.
_GROUPS: dict[str, tuple[tuple[str, str, bool], ...]] = {
    "macd": (("macd", "macd", True), ("signal", "macd_signal", True), ("hist", "macd_hist", True)),
    "ema": (("ema12", "ema12", True), ("ema26", "ema26", True)),
    "boll": (
        ("mid", "boll_mid", True),
        ("upper", "boll_upper", True),
        ("lower", "boll_lower", True),
    ),
    "vwap": (("session", "vwap_session", True), ("w5m", "vwap_w5m", False)),
    "imbalance": (
        ("spread", "imbalance_spread", True),
        ("bid_px", "imbalance_bid_px", True),
        ("ask_px", "imbalance_ask_px", True),
        ("bid_sz", "imbalance_bid_sz", True),
        ("ask_sz", "imbalance_ask_sz", True),
    ),
    "vol_realized": (("w60s", "vol_realized_w60s", True),),
}


def row_key(row: Mapping[str, Any]) -> RowKey:
    return RowKey(to_utc(row["event_ts"]), str(row["symbol"]), int(row["seq"]))


def _group(
    row: Mapping[str, Any], fields: tuple[tuple[str, str, bool], ...]
) -> dict[str, Any] | None:
    if any(required and row.get(column) is None for _, column, required in fields):
        return None
    return {name: row.get(column) for name, column, _ in fields}


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso_millis(value)


def _window(row: Mapping[str, Any]) -> dict[str, Any] | None:
    if not row.get("window_size"):
        return None
    return {
        "size": row["window_size"],
        "step": row.get("window_step"),
        "start": _iso(row.get("window_start")),
        "end": _iso(row.get("window_end")),
    }


def row_to_signal(row: Mapping[str, Any]) -> TaSignal:
    """A `ta_signals` row as the upstream signal; pydantic ValidationError when unusable."""
    data: dict[str, Any] = {
        "ingest_ts": row["ingest_ts"],
        "event_ts": row["event_ts"],
        "symbol": row["symbol"],
        "seq": row["seq"],
        "is_final": None if row.get("is_final") is None else bool(row["is_final"]),
        "source": row.get("source") or None,
        "version": row.get("version") or 1,
        "window": _window(row),
        "rsi14": row.get("rsi14"),
    }
    for name, fields in _GROUPS.items():
        data[name] = _group(row, fields)
    return TaSignal.model_validate(data)


def _parse_iso(value: str | None) -> datetime | None:
    return None if value is None else to_utc(datetime.fromisoformat(value.replace("Z", "+00:00")))


def signal_to_row(sig: TaSignal) -> dict[str, Any]:
    """The flattened row of a signal (what the upstream sink writes); sizes rounded to UInt64."""
    nested = sig.model_dump()
    row: dict[str, Any] = {
        "symbol": sig.symbol,
        "event_ts": sig.event_ts,
        "seq": sig.seq,
        "ingest_ts": sig.ingest_ts,
        "is_final": int(bool(sig.is_final)),
        "source": sig.source or "",
        "window_size": sig.window.size if sig.window else "",
        "window_step": sig.window.step if sig.window else None,
        "window_start": _parse_iso(sig.window.start) if sig.window else None,
        "window_end": _parse_iso(sig.window.end) if sig.window else None,
        "version": sig.version,
        "rsi14": sig.rsi14,
    }
    for name, fields in _GROUPS.items():
        part = nested.get(name) or {}
        for field_name, column, _ in fields:
            row[column] = part.get(field_name)
    for column in ("imbalance_bid_sz", "imbalance_ask_sz"):
        if row[column] is not None:
            row[column] = round(row[column])
    return row


def rows_for_insert(signals: list[TaSignal]) -> list[list[Any]]:
    """Signals as insert rows in `SIGNAL_COLUMNS` order."""
    rows = (signal_to_row(s) for s in signals)
    return [[row[c] for c in SIGNAL_COLUMNS] for row in rows]
