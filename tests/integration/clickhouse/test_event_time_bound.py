"""The poll source never reads a row dated in the future, and never publishes a bad number."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.ta_signal import Vwap
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.source import MappingCursorStore, PollSource
from tests.integration.clickhouse.helpers import ListPublisher, insert, key_of, ta

pytestmark = pytest.mark.integration

SKEW = timedelta(seconds=300)


class Refused:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []

    async def __call__(self, row: dict[str, Any], error: str, reason: str = "") -> None:
        self.rows.append((str(row["symbol"]), reason, error))


async def test_a_future_row_waits_for_its_time_and_never_moves_the_cursor(ch: ClickHouse) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    clock = {"now": now}
    current = ta("MSFT", now - timedelta(seconds=5), 1)
    ahead = ta("AAPL", now + timedelta(hours=1), 2)  # an hour ahead of the worker's clock
    nan_rsi = ta("TSLA", now - timedelta(seconds=4), 3, rsi=math.nan)
    negative = ta("NVDA", now - timedelta(seconds=3), 4).model_copy(
        update={"vwap": Vwap(session=-1.0)}
    )
    await insert(ch, [current, ahead, nan_rsi, negative])
    table: dict[str, Any] = {}
    out, refused = ListPublisher(), Refused()
    src = PollSource(
        ch,
        MappingCursorStore(table),
        out,
        lookback=timedelta(seconds=30),
        batch_size=100,
        on_invalid=refused,
        clock=lambda: clock["now"],
        max_future=SKEW,
    )

    result = await src.poll_once()
    assert out.take() == [key_of(current)]
    assert result.cursor is not None and result.cursor.event_ts <= now  # not an hour ahead
    reasons = {symbol: reason for symbol, reason, _ in refused.rows}
    assert reasons == {"TSLA": "invalid_number", "NVDA": "invalid_number"}
    assert any("rsi14" in error for _, _, error in refused.rows)
    assert any("vwap.session" in error for _, _, error in refused.rows)

    clock["now"] = now + timedelta(hours=1) - SKEW  # its time has come (within the skew)
    await src.poll_once()
    assert out.take() == [key_of(ahead)]  # read once, at its time
