"""The SELECTs over `ta_signals`. Every value is a typed server-side parameter.

clickhouse-connect's client-side `%(x)s` binding drops milliseconds from datetimes; keyset
comparisons need them, so all times travel as `{name:DateTime64(3, 'UTC')}`.

Versions of one key that ReplacingMergeTree has not merged yet are collapsed with
`ORDER BY key, ingest_ts DESC LIMIT 1 BY key`: the newest ingest wins, as a merge would decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.common import to_utc
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.rows import SIGNAL_COLUMNS
from streams.domain.ch_cursor import PollWindow, RowKey
from streams.domain.freshness import SymbolClass

TS = "DateTime64(3, 'UTC')"
_SELECT = ", ".join(SIGNAL_COLUMNS)
_NEWEST_VERSION = (
    "ORDER BY event_ts, symbol, seq, ingest_ts DESC\n"
    "LIMIT 1 BY symbol, event_ts, seq\n"
    "LIMIT {limit:UInt32}"
)


def poll_sql(ch: ClickHouse) -> str:
    """New rows of one poll: the rule of `streams.domain.ch_cursor.is_new`, server-side.

    `until` (the worker's clock plus the allowed skew) bounds event time from above: a row dated
    in the future is not read until its time comes, so it can never move the keyset cursor (and
    with it the window and every symbol's mark) ahead of the present.
    """
    return f"""
SELECT {_SELECT} FROM {ch.table("ta_signals")}
WHERE event_ts >= {{since:{TS}}}
  AND event_ts <= {{until:{TS}}}
  AND (event_ts, symbol, seq) > ({{floor_ts:{TS}}}, {{floor_symbol:String}}, {{floor_seq:UInt64}})
  AND (event_ts, seq) > (
      transform(symbol, {{mark_symbols:Array(String)}}, {{mark_ts:Array({TS})}},
                {{unmarked_ts:{TS}}}),
      transform(symbol, {{mark_symbols:Array(String)}}, {{mark_seq:Array(UInt64)}},
                toUInt64(0)))
{_NEWEST_VERSION}"""


def poll_params(window: PollWindow, limit: int, until: datetime) -> dict[str, Any]:
    symbols = sorted(window.marks)
    return {
        "since": window.since,
        "until": until,
        "floor_ts": window.floor.event_ts,
        "floor_symbol": window.floor.symbol,
        "floor_seq": window.floor.seq,
        "mark_symbols": symbols,
        "mark_ts": [window.marks[s].event_ts for s in symbols],
        "mark_seq": [window.marks[s].seq for s in symbols],
        "unmarked_ts": window.unmarked.event_ts,
        "limit": limit,
    }


async def poll_rows(
    ch: ClickHouse, window: PollWindow, limit: int, until: datetime
) -> list[dict[str, Any]]:
    return await ch.query(poll_sql(ch), poll_params(window, limit, until))


@dataclass(frozen=True)
class RangeQuery:
    """History in `[start, end)` in key order, optionally for some symbols only."""

    start: datetime
    end: datetime
    symbols: tuple[str, ...] = ()


def range_sql(ch: ClickHouse, with_symbols: bool) -> str:
    symbols = "\n  AND symbol IN {symbols:Array(String)}" if with_symbols else ""
    return f"""
SELECT {_SELECT} FROM {ch.table("ta_signals")}
WHERE event_ts >= {{start:{TS}}} AND event_ts < {{end:{TS}}}
  AND (event_ts, symbol, seq)
      > ({{after_ts:{TS}}}, {{after_symbol:String}}, {{after_seq:UInt64}}){symbols}
{_NEWEST_VERSION}"""


async def range_page(
    ch: ClickHouse, query: RangeQuery, after: RowKey | None, limit: int
) -> list[dict[str, Any]]:
    """One keyset page of a range: rows after `after` (None = from the start)."""
    after = after or RowKey(query.start - timedelta(milliseconds=1), "", 0)
    params: dict[str, Any] = {
        "start": query.start,
        "end": query.end,
        "after_ts": after.event_ts,
        "after_symbol": after.symbol,
        "after_seq": after.seq,
        "limit": limit,
    }
    if query.symbols:
        params["symbols"] = list(query.symbols)
    return await ch.query(range_sql(ch, bool(query.symbols)), params)


@dataclass(frozen=True)
class ClassLatest:
    latest: dict[SymbolClass, datetime | None]
    fresh_symbols: dict[SymbolClass, int]


async def latest_by_class(ch: ClickHouse, *, since: datetime, fresh_since: datetime) -> ClassLatest:
    """Newest event time per class since `since`, and symbols with a signal since `fresh_since`."""
    sql = f"""
SELECT position(symbol, '/') > 0 AS crypto,
       max(event_ts) AS latest,
       uniqExactIf(symbol, event_ts >= {{fresh_since:{TS}}}) AS fresh_symbols
FROM {ch.table("ta_signals")}
WHERE event_ts >= {{since:{TS}}}
GROUP BY crypto"""
    rows = await ch.query(sql, {"since": since, "fresh_since": fresh_since})
    latest: dict[SymbolClass, datetime | None] = {cls: None for cls in SymbolClass}
    fresh: dict[SymbolClass, int] = {cls: 0 for cls in SymbolClass}
    for row in rows:
        cls = SymbolClass.crypto if row["crypto"] else SymbolClass.equity
        latest[cls] = to_utc(row["latest"])
        fresh[cls] = int(row["fresh_symbols"])
    return ClassLatest(latest, fresh)


def symbols_filter(raw: str | None) -> tuple[str, ...]:
    """`--symbols AAPL,BTC/USD` -> sorted unique symbols."""
    return tuple(sorted({s.strip() for s in (raw or "").split(",") if s.strip()}))
