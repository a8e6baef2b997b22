"""Keyset cursor over ClickHouse `ta_signals`, with a lookback window for late rows. Pure.

Rows are read in key order `(event_ts, symbol, seq)`. The state is:

- `cursor`: the highest key handed to the pipeline: the keyset position. It is persisted,
  mirrored to Postgres `trade_cursor` per account, and it places the lookback window.
- `marks`: per symbol, the highest `(event_ts, seq)` handed on, kept while it lies inside the
  window `[cursor.event_ts - lookback, cursor]`. This is the bounded "seen" set.
- `floor`: keys at or below it are never read (a resume point whose marks are unknown: a cold
  start, a cursor seeded from Postgres, or marks evicted by the size cap).

A row is read exactly when all three hold:
    event_ts >= cursor.event_ts - lookback      (inside the window)
    key > floor                                  (after the resume point)
    (event_ts, seq) > marks[symbol]              (newer than what this symbol already gave)

Consequences, deliberately:
- A row that lands late, with an older event time than the cursor but inside the window, is read
  once if it is newer than its own symbol's mark: the usual case of one symbol's sink batch
  arriving after another symbol moved the cursor on. The global keyset alone would skip it.
- A row older than its symbol's mark is dropped: a ReplacingMergeTree duplicate or re-insert of
  a key already handed on, or an out-of-order row of a symbol that already moved on (the signals
  agent processes each symbol in event-time order and would drop it too).
- A row older than the window when it lands is never read.
- Several versions of one key not yet merged are collapsed by the query (newest `ingest_ts`).
The marks are one entry per symbol active in the window: bounded by the symbol universe, and
capped by `max_marks` (eviction raises the floor, so nothing evicted is ever read twice).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.common import to_utc

MAX_MARKS = 50_000
_MS = timedelta(milliseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True, slots=True)
class RowKey:
    """The sort key of a `ta_signals` row, which is also its identity."""

    event_ts: datetime
    symbol: str
    seq: int


@dataclass(frozen=True, order=True, slots=True)
class SymbolMark:
    event_ts: datetime
    seq: int


@dataclass(frozen=True)
class CursorState:
    cursor: RowKey | None = None
    floor: RowKey | None = None
    marks: Mapping[str, SymbolMark] = field(default_factory=dict)

    def window_start(self, lookback: timedelta) -> datetime:
        """Lowest event time still read: the cursor minus the lookback, or the floor's time."""
        if self.cursor is not None:
            return self.cursor.event_ts - lookback
        if self.floor is not None:
            return self.floor.event_ts
        raise ValueError("a cursor state needs a cursor or a floor")


@dataclass(frozen=True)
class PollWindow:
    """What one poll asks ClickHouse for; the query applies the same rule as `is_new`."""

    since: datetime
    floor: RowKey
    marks: Mapping[str, SymbolMark]

    @property
    def unmarked(self) -> SymbolMark:
        """The mark of a symbol without one: just below the window, so all its rows pass."""
        return SymbolMark(self.since - _MS, 0)


@dataclass(frozen=True)
class Advance:
    state: CursorState
    accepted: tuple[RowKey, ...]
    late: int  # accepted keys below the cursor the poll started from
    dropped: int  # keys refused (already handed on, or outside the window)


def cold_start(now: datetime, lookback: timedelta) -> CursorState:
    """First start with no cursor anywhere: read from `now - lookback` on."""
    return CursorState(floor=RowKey(to_utc(now) - lookback, "", 0))


def resume_at(key: RowKey) -> CursorState:
    """Resume after `key` without marks (seeded from Postgres): nothing at or below it is read."""
    return CursorState(cursor=key, floor=key)


def poll_window(state: CursorState, lookback: timedelta) -> PollWindow:
    since = state.window_start(lookback)
    floor = state.floor if state.floor is not None else RowKey(since - _MS, "", 0)
    return PollWindow(since=since, floor=floor, marks=state.marks)


def is_new(window: PollWindow, key: RowKey) -> bool:
    mark = window.marks.get(key.symbol, window.unmarked)
    return (
        key.event_ts >= window.since
        and key > window.floor
        and SymbolMark(key.event_ts, key.seq) > mark
    )


def advance(
    state: CursorState,
    keys: Iterable[RowKey],
    lookback: timedelta,
    *,
    max_marks: int = MAX_MARKS,
) -> Advance:
    """Accept the new keys of one poll (in key order), move the cursor, prune the marks.

    The query already filters with the same rule; applying it again here makes the state the
    single authority (a row served twice by a replica or a retried query is still dropped).
    """
    window = poll_window(state, lookback)
    marks = dict(state.marks)
    accepted: list[RowKey] = []
    dropped = 0
    for key in keys:
        current = PollWindow(window.since, window.floor, marks)
        if not is_new(current, key):
            dropped += 1
            continue
        marks[key.symbol] = SymbolMark(key.event_ts, key.seq)
        accepted.append(key)
    if not accepted:
        return Advance(state, (), 0, dropped)
    start = state.cursor
    cursor = max(accepted) if start is None else max(*accepted, start)
    late = 0 if start is None else sum(1 for k in accepted if k < start)
    new_state = _prune(CursorState(cursor, state.floor, marks), lookback, max_marks)
    return Advance(new_state, tuple(accepted), late, dropped)


def _prune(state: CursorState, lookback: timedelta, max_marks: int) -> CursorState:
    since = state.window_start(lookback)
    # A mark below the window constrains nothing: every row it would refuse is below it too.
    marks = {s: m for s, m in state.marks.items() if m.event_ts >= since}
    floor = state.floor if state.floor is not None and state.floor.event_ts >= since else None
    if len(marks) > max_marks:
        by_age = sorted(marks.items(), key=lambda item: (item[1], item[0]))
        evicted = dict(by_age[: len(marks) - max_marks])
        highest = max(RowKey(m.event_ts, s, m.seq) for s, m in evicted.items())
        floor = highest if floor is None else max(floor, highest)
        marks = {s: m for s, m in marks.items() if s not in evicted}
    return replace(state, floor=floor, marks=marks)


# ---------------------------------------------------------------- (de)serialisation


def _ms(ts: datetime) -> int:
    # Integer arithmetic: float timestamps can land one millisecond off.
    return (to_utc(ts) - _EPOCH) // _MS


def _from_ms(value: int) -> datetime:
    return _EPOCH + value * _MS


def _key_out(key: RowKey | None) -> list[Any] | None:
    return None if key is None else [_ms(key.event_ts), key.symbol, key.seq]


def _key_in(raw: Any) -> RowKey | None:
    if raw is None:
        return None
    ts, symbol, seq = raw
    return RowKey(_from_ms(int(ts)), str(symbol), int(seq))


def state_to_dict(state: CursorState) -> dict[str, Any]:
    """Compact JSON form for the changelog table (times as epoch milliseconds)."""
    return {
        "v": 1,
        "cursor": _key_out(state.cursor),
        "floor": _key_out(state.floor),
        "marks": {s: [_ms(m.event_ts), m.seq] for s, m in sorted(state.marks.items())},
    }


def state_from_dict(data: Mapping[str, Any]) -> CursorState:
    if data.get("v") != 1:
        raise ValueError(f"unknown cursor state version {data.get('v')!r}")
    marks = {
        str(s): SymbolMark(_from_ms(int(ts)), int(seq)) for s, (ts, seq) in data["marks"].items()
    }
    return CursorState(_key_in(data.get("cursor")), _key_in(data.get("floor")), marks)


def min_cursor(keys: Iterable[RowKey | None]) -> RowKey | None:
    """The resume point shared by several accounts: the one furthest behind (none skips)."""
    present = [k for k in keys if k is not None]
    return min(present) if present else None
