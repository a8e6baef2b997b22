"""The poll source against the embedded engine (chdb through clickhouse-connect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.clickhouse.client import ClickHouse
from streams.clickhouse.schema import init_schema
from streams.clickhouse.source import MappingCursorStore, PollSource
from tests.integration.clickhouse.helpers import ListPublisher, as_json_store, insert, key_of, ta

pytestmark = pytest.mark.integration

MS = timedelta(milliseconds=1)
LOOKBACK = timedelta(seconds=30)


def t0() -> datetime:
    """A recent time with a non-zero millisecond part (cold start reads `now - lookback` on)."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=20) + 7 * MS


def source(
    ch: ClickHouse, table: dict[str, Any], publisher: ListPublisher, batch: int = 1000
) -> PollSource:
    return PollSource(ch, MappingCursorStore(table), publisher, lookback=LOOKBACK, batch_size=batch)


async def test_schema_is_the_upstream_engine_and_order(ch: ClickHouse) -> None:
    await init_schema(ch)  # a second run changes nothing
    tables = await ch.query(
        "SELECT name, engine_full, sorting_key FROM system.tables "
        "WHERE database = {db:String} ORDER BY name",
        {"db": ch.database},
    )
    assert [t["name"] for t in tables] == ["ta_microbars", "ta_signals"]
    for table in tables:
        assert table["engine_full"].startswith("ReplacingMergeTree(ingest_ts)")
        assert table["sorting_key"] == "symbol, event_ts, seq"
    types = {
        c["name"]: c["type"]
        for c in await ch.query(
            "SELECT name, type FROM system.columns WHERE database = {db:String} "
            "AND table = 'ta_signals'",
            {"db": ch.database},
        )
    }
    assert types["event_ts"] == types["ingest_ts"] == "DateTime64(3, 'UTC')"
    assert types["seq"] == "UInt64" and types["is_final"] == "UInt8"
    assert types["imbalance_bid_sz"] == "Nullable(UInt64)"
    assert types["macd_signal"] == "Nullable(Float64)"


async def test_paging_across_equal_timestamps_and_milliseconds(ch: ClickHouse) -> None:
    base = t0()
    rows = [ta(s, base, seq) for s in ("MSFT", "AAPL", "BTC/USD", "ETH/USD") for seq in (1, 2)]
    rows += [ta("AAPL", base + MS, 3), ta("AAPL", base + 2 * MS, 4), ta("TSLA", base + MS, 1)]
    rows += [ta("AAPL", base + 999 * MS, 5)]
    await insert(ch, rows)
    out = ListPublisher()
    pages = await source(ch, {}, out, batch=3).poll_until_caught_up(max_pages=50)

    assert out.published_keys() == sorted(key_of(r) for r in rows)  # each once, in key order
    assert len(pages) == 5 and [p.read for p in pages] == [3, 3, 3, 3, 0]
    assert [s.event_ts.microsecond for s in out.signals[-4:]] == [8000, 8000, 9000, 6000]


async def test_restart_reads_nothing_twice_and_skips_nothing(ch: ClickHouse) -> None:
    base = t0()
    first = [ta(s, base + i * MS, i) for i in range(4) for s in ("AAPL", "MSFT")]
    await insert(ch, first)
    table: dict[str, Any] = {}
    out = ListPublisher()
    await source(ch, table, out, batch=5).poll_once()  # a partial read, then the worker stops
    assert len(out.signals) == 5

    cursor = key_of(out.signals[-1])
    later = [
        ta("AAPL", cursor[0], 50),  # same time as the cursor, a symbol before it: late
        ta("ZZZ", cursor[0], 0),  # same time as the cursor, after it
        ta("MSFT", base + 10 * MS, 10),
    ]
    await insert(ch, later)
    restarted = source(ch, as_json_store(table), out, batch=2)  # nothing kept in memory
    await restarted.poll_until_caught_up(max_pages=50)

    read = out.published_keys()
    assert len(read) == len(set(read))
    assert sorted(read) == sorted(key_of(r) for r in first + later)


async def test_lookback_reads_late_rows_once_and_drops_merge_duplicates(ch: ClickHouse) -> None:
    base = t0()
    table: dict[str, Any] = {}
    out = ListPublisher()
    src = source(ch, table, out)
    await insert(ch, [ta("AAPL", base + timedelta(seconds=i), i) for i in range(11)])
    assert len((await src.poll_once(), out.take())[1]) == 11  # cursor at base + 10 s

    late = ta("MSFT", base + timedelta(seconds=5), 1)  # older than the cursor, inside 30 s
    await insert(ch, [late])
    result = await src.poll_once()
    assert out.take() == [key_of(late)] and result.late == 1
    assert (await src.poll_once()).published == 0  # read once

    # A re-insert of a key already handed on (newer ingest) is a merge duplicate: dropped,
    # before and after the engine merged it.
    await insert(ch, [ta("AAPL", base + timedelta(seconds=3), 3, ingest_delay=5 * MS, rsi=1.0)])
    assert (await src.poll_once()).published == 0
    await ch.command(f"OPTIMIZE TABLE {ch.table('ta_signals')} FINAL")
    assert (await src.poll_once()).published == 0

    too_late = ta("TSLA", base + timedelta(seconds=10) - LOOKBACK - MS, 1)  # outside the window
    await insert(ch, [too_late])
    assert (await src.poll_once()).published == 0

    # Two versions of a new key not merged yet: read once, the newest ingest wins.
    fresh = base + timedelta(seconds=11)
    await insert(ch, [ta("NVDA", fresh, 1, rsi=10.0)])
    await insert(ch, [ta("NVDA", fresh, 1, ingest_delay=timedelta(seconds=1), rsi=20.0)])
    await src.poll_once()
    assert [(key_of(s), s.rsi14) for s in out.signals] == [((fresh, "NVDA", 1), 20.0)]


class FailingOnceStore(MappingCursorStore):
    """A cursor table whose write fails once, after `ok_saves` successful writes."""

    def __init__(self, table: dict[str, Any], ok_saves: int) -> None:
        super().__init__(table)
        self.ok_saves = ok_saves

    async def save(self, state: Any) -> None:
        if self.ok_saves == 0:
            self.ok_saves = -1
            raise ConnectionError("changelog write failed")
        self.ok_saves -= 1
        await super().save(state)


async def test_a_failed_cursor_write_stops_publishing_until_it_is_saved(ch: ClickHouse) -> None:
    base = t0()
    await insert(ch, [ta("AAPL", base + i * MS, i) for i in range(3)])
    out = ListPublisher()
    table: dict[str, Any] = {}
    src = PollSource(ch, FailingOnceStore(table, 1), out, lookback=LOOKBACK, batch_size=10)
    with pytest.raises(ConnectionError):
        await src.poll_once()  # published, then the cursor write failed
    assert len(out.signals) == 3
    await insert(ch, [ta("AAPL", base + 5 * MS, 5)])
    await src.poll_once()  # saves the pending cursor first: the batch is not published again
    assert [k[2] for k in out.published_keys()] == [0, 1, 2, 5]
