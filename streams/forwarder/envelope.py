"""Trade-update envelopes exactly as the Kotlin forwarder writes them (pure).

camelCase JSON: `ingestTs`, `eventTs`, `feed: "alpaca"`, `channel: "trade_updates"`, `symbol`,
`seq` (per-symbol counter restarting at 1 with the process: never an ordering key), `payload`
(Alpaca's `data` verbatim), `accountLabel`, `isFinal: true`, `source: "ws"`, `version`.
v1: `accountLabel: null`, version 1. v2: `payload.account_label` and `accountLabel` set, version 2.
Both are keyed by symbol.
"""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime
from typing import Any

from schemas.trade_update import iso_micros

UNKNOWN_SYMBOL = "UNKNOWN"


class SeqTracker:
    """Per-symbol sequence numbers starting at 1 (they restart with the process)."""

    def __init__(self) -> None:
        self._last: defaultdict[str, int] = defaultdict(int)

    def next(self, symbol: str) -> int:
        self._last[symbol] += 1
        return self._last[symbol]


def symbol_of(data: dict[str, Any]) -> str:
    order = data.get("order")
    symbol = order.get("symbol") if isinstance(order, dict) else None
    return symbol if isinstance(symbol, str) and symbol else UNKNOWN_SYMBOL


def event_ts_of(data: dict[str, Any], ingest_ts: datetime) -> str:
    """The event's `timestamp` as sent, else the order's `submitted_at`, else the ingest time."""
    order = data.get("order")
    for candidate in (data.get("timestamp"), isinstance(order, dict) and order.get("submitted_at")):
        if isinstance(candidate, str) and candidate:
            return candidate
    return iso_micros(ingest_ts)


def envelope(
    data: dict[str, Any],
    *,
    seq: int,
    ingest_ts: datetime,
    account_label: str | None,
    version: int,
) -> dict[str, Any]:
    """The v1 (`account_label=None`, version 1) or v2 (label, version 2) envelope of `data`."""
    payload = dict(data)
    if account_label is not None:
        payload["account_label"] = account_label
    return {
        "ingestTs": iso_micros(ingest_ts),
        "eventTs": event_ts_of(data, ingest_ts),
        "feed": "alpaca",
        "channel": "trade_updates",
        "symbol": symbol_of(data),
        "seq": seq,
        "payload": payload,
        "accountLabel": account_label,
        "isFinal": True,
        "source": "ws",
        "version": version,
    }


def encode(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def envelopes_for(
    data: dict[str, Any],
    *,
    account_label: str,
    seq: int,
    ingest_ts: datetime,
    emit_v1: bool,
) -> list[tuple[int, bytes, bytes]]:
    """(version, key, value) records of one event: v2 always, v1 when asked."""
    key = symbol_of(data).encode("utf-8")
    out = [
        (
            2,
            key,
            encode(
                envelope(data, seq=seq, ingest_ts=ingest_ts, account_label=account_label, version=2)
            ),
        )
    ]
    if emit_v1:
        v1 = envelope(data, seq=seq, ingest_ts=ingest_ts, account_label=None, version=1)
        out.append((1, key, encode(v1)))
    return out
