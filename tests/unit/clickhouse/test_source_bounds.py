"""Defence in depth: a row beyond `now + skew` that a query still returns is a dead letter and is
not accepted, so the keyset cursor cannot jump ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.ta_signal import TaSignal
from streams.clickhouse.rows import signal_to_row
from streams.clickhouse.source import MappingCursorStore, PollSource
from tests.integration.clickhouse.helpers import ListPublisher, key_of, ta

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class RowsClickHouse:
    """Answers every query with the given rows, ignoring its bounds (a broken query)."""

    def __init__(self, signals: list[TaSignal]) -> None:
        self.rows = [signal_to_row(s) for s in signals]
        self.params: list[dict[str, Any]] = []

    def table(self, name: str) -> str:
        return name

    async def query(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        self.params.append(params)
        return list(self.rows)


async def test_a_future_row_returned_anyway_is_dead_lettered_and_not_accepted() -> None:
    current = ta("MSFT", NOW - timedelta(seconds=1), 1)
    ahead = ta("AAPL", datetime(9999, 12, 31, tzinfo=UTC), 2)
    ch = RowsClickHouse([current, ahead])
    letters: list[tuple[str, str]] = []

    async def on_invalid(row: dict[str, Any], error: str, reason: str = "") -> None:
        letters.append((str(row["symbol"]), reason))

    out = ListPublisher()
    src = PollSource(
        ch,  # type: ignore[arg-type]
        MappingCursorStore({}),
        out,
        lookback=timedelta(seconds=30),
        batch_size=10,
        on_invalid=on_invalid,
        clock=lambda: NOW,
        max_future=timedelta(seconds=300),
    )
    result = await src.poll_once()
    assert ch.params[-1]["until"] == NOW + timedelta(seconds=300)  # the query's upper bound
    assert out.published_keys() == [key_of(current)]
    assert letters == [("AAPL", "event_time_in_future")]
    assert result.cursor is not None and result.cursor.event_ts == current.event_ts
