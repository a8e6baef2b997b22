"""Rows for the ClickHouse tests, and an in-process publisher that keeps what it was given."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from schemas.ta_signal import TaSignal
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import SIGNAL_COLUMNS, rows_for_insert

Key = tuple[datetime, str, int]


def ta(
    symbol: str,
    event_ts: datetime,
    seq: int,
    *,
    ingest_delay: timedelta = timedelta(milliseconds=40),
    rsi: float = 50.0,
) -> TaSignal:
    """A quiet signal (no MACD: no strategy acts on it) with a distinguishable RSI."""
    return TaSignal.model_validate(
        {
            "ingest_ts": event_ts + ingest_delay,
            "event_ts": event_ts,
            "symbol": symbol,
            "seq": seq,
            "is_final": True,
            "source": "test",
            "window": {"size": "PT1S"},
            "rsi14": rsi,
            "vwap": {"session": 100.0},
        }
    )


async def insert(ch: ClickHouse, signals: Sequence[TaSignal]) -> None:
    """One insert per call: a separate part, like a separate upstream sink flush."""
    await ch.insert("ta_signals", rows_for_insert(list(signals)), SIGNAL_COLUMNS)


def key_of(sig: TaSignal) -> Key:
    return (sig.event_ts, sig.symbol, sig.seq)


class ListPublisher:
    """Collects published signals in order (with their headers), like an acked topic would."""

    def __init__(self) -> None:
        self.signals: list[TaSignal] = []
        self.headers: list[list[tuple[str, bytes]] | None] = []

    async def publish(
        self, signals: Sequence[TaSignal], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        self.signals.extend(signals)
        self.headers.extend([headers] * len(signals))

    def published_keys(self) -> list[Key]:
        return [key_of(s) for s in self.signals]

    def take(self) -> list[Key]:
        keys = self.published_keys()
        self.signals.clear()
        self.headers.clear()
        return keys


def as_json_store(data: dict[str, Any]) -> dict[str, Any]:
    """A table's content after a restart: what survived serialisation, nothing in memory."""
    import json

    return {k: json.loads(json.dumps(v)) for k, v in data.items()}
