"""The keyset cursor with lookback marks: exact acceptance rules, pruning, persistence form."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.ch_cursor import (
    CursorState,
    RowKey,
    SymbolMark,
    advance,
    cold_start,
    is_new,
    min_cursor,
    poll_window,
    resume_at,
    state_from_dict,
    state_to_dict,
)

T0 = datetime(2026, 3, 2, 14, 30, 0, 123000, tzinfo=UTC)
LOOKBACK = timedelta(seconds=30)
MS = timedelta(milliseconds=1)


def key(ms: int, symbol: str = "AAPL", seq: int = 0) -> RowKey:
    return RowKey(T0 + ms * MS, symbol, seq)


def test_cold_start_reads_from_now_minus_lookback() -> None:
    state = cold_start(T0, LOOKBACK)
    window = poll_window(state, LOOKBACK)
    assert window.since == T0 - LOOKBACK
    assert is_new(window, RowKey(T0 - LOOKBACK, "AAPL", 0))
    assert not is_new(window, RowKey(T0 - LOOKBACK - MS, "AAPL", 0))


def test_equal_timestamps_are_ordered_by_symbol_then_seq() -> None:
    keys = [key(0, "AAPL", 1), key(0, "AAPL", 2), key(0, "BTC/USD", 1), key(0, "MSFT", 7)]
    step = advance(cold_start(T0, LOOKBACK), keys, LOOKBACK)
    assert step.accepted == tuple(keys)
    assert step.state.cursor == key(0, "MSFT", 7)
    again = advance(step.state, keys, LOOKBACK)
    assert again.accepted == () and again.dropped == 4


def test_one_millisecond_apart_is_new_and_same_millisecond_is_not() -> None:
    state = advance(cold_start(T0, LOOKBACK), [key(5)], LOOKBACK).state
    window = poll_window(state, LOOKBACK)
    assert is_new(window, key(6))
    assert not is_new(window, key(5))
    assert is_new(window, key(5, seq=1))  # same time, next seq


def test_late_row_of_another_symbol_inside_window_is_read_once() -> None:
    state = advance(cold_start(T0, LOOKBACK), [key(0), key(10_000)], LOOKBACK).state
    late = key(5_000, "MSFT")  # older than the cursor, MSFT never seen
    step = advance(state, [late], LOOKBACK)
    assert step.accepted == (late,) and step.late == 1
    assert step.state.cursor == key(10_000)  # the cursor never moves back
    assert advance(step.state, [late], LOOKBACK).accepted == ()


def test_row_older_than_its_symbols_mark_is_dropped() -> None:
    state = advance(cold_start(T0, LOOKBACK), [key(0), key(1_000)], LOOKBACK).state
    step = advance(state, [key(500)], LOOKBACK)  # AAPL already moved past it
    assert step.accepted == () and step.dropped == 1


def test_row_older_than_the_window_is_never_read() -> None:
    state = advance(cold_start(T0, LOOKBACK), [key(60_000)], LOOKBACK).state
    assert poll_window(state, LOOKBACK).since == key(30_000).event_ts
    step = advance(state, [key(29_999, "MSFT"), key(30_000, "MSFT")], LOOKBACK)
    assert step.accepted == (key(30_000, "MSFT"),)


def test_marks_below_the_window_are_pruned() -> None:
    state = advance(cold_start(T0, LOOKBACK), [key(0, "A"), key(1, "B")], LOOKBACK).state
    state = advance(state, [key(40_000, "C")], LOOKBACK).state
    assert set(state.marks) == {"C"}
    # B's next row is above the window: still read, nothing about B was lost.
    assert advance(state, [key(20_000, "B")], LOOKBACK).accepted == (key(20_000, "B"),)


def test_resume_point_without_marks_reads_nothing_at_or_below_it() -> None:
    state = resume_at(key(1_000, "MSFT", 3))
    window = poll_window(state, LOOKBACK)
    assert not is_new(window, key(1_000, "MSFT", 3))
    assert not is_new(window, key(1_000, "AAPL", 9))
    assert is_new(window, key(1_000, "MSFT", 4))
    assert is_new(window, key(1_000, "TSLA", 0))


def test_cap_on_marks_evicts_oldest_and_raises_the_floor() -> None:
    keys = [key(i, f"S{i:03d}") for i in range(10)]
    step = advance(cold_start(T0, LOOKBACK), keys, LOOKBACK, max_marks=4)
    assert len(step.state.marks) == 4
    assert step.state.floor == key(5, "S005")
    window = poll_window(step.state, LOOKBACK)
    assert not any(is_new(window, k) for k in keys)  # evicted keys are never read twice


def test_state_round_trips_through_json_at_millisecond_precision() -> None:
    state = CursorState(
        cursor=key(123, "BTC/USD", 9),
        floor=key(-5, "", 0),
        marks={"BTC/USD": SymbolMark(key(123).event_ts, 9), "AAPL": SymbolMark(T0, 2)},
    )
    back = state_from_dict(json.loads(json.dumps(state_to_dict(state))))
    assert back == state
    assert back.cursor is not None and back.cursor.event_ts.microsecond == 246000


def test_min_cursor_is_the_account_furthest_behind() -> None:
    assert min_cursor([key(5), None, key(3, "ZZZ"), key(3, "AAA")]) == key(3, "AAA")
    assert min_cursor([None, None]) is None


def _drain(state: CursorState, landed: set[RowKey], batch: int) -> tuple[CursorState, list[RowKey]]:
    """Poll like ClickHouse would: the smallest `batch` new keys, until none is new."""
    seen: list[RowKey] = []
    while True:
        window = poll_window(state, LOOKBACK)
        page = sorted(k for k in landed if is_new(window, k))[:batch]
        if not page:
            return state, seen
        step = advance(state, page, LOOKBACK)
        seen.extend(step.accepted)
        state = step.state


@settings(max_examples=80, deadline=None)
@given(
    arrivals=st.lists(
        st.tuples(st.integers(0, 25), st.sampled_from(["A", "B", "C/USD"]), st.integers(0, 2)),
        min_size=1,
        max_size=60,
    ),
    batch=st.integers(1, 7),
    polls_every=st.integers(1, 5),
)
def test_rows_landing_in_any_order_are_never_read_twice(
    arrivals: list[tuple[int, str, int]], batch: int, polls_every: int
) -> None:
    """Rows land in any order (all inside the lookback), polls happen between landings.

    No key is read twice; keys of one symbol are read in increasing order; and every key that
    was newer than everything of its symbol already landed (in order for its symbol, whatever
    the other symbols did) is read."""
    state = cold_start(T0, LOOKBACK)
    landed: set[RowKey] = set()
    must_read: set[RowKey] = set()
    seen: list[RowKey] = []
    for i, (second, symbol, seq) in enumerate(arrivals):
        k = key(second * 1000, symbol, seq)
        if all(k > o for o in landed if o.symbol == symbol):
            must_read.add(k)
        landed.add(k)
        if i % polls_every == 0:
            state, got = _drain(state, landed, batch)
            seen += got
    state, got = _drain(state, landed, batch)
    seen += got
    assert len(seen) == len(set(seen))
    assert must_read <= set(seen) <= landed
    for symbol in ("A", "B", "C/USD"):
        mine = [k for k in seen if k.symbol == symbol]
        assert mine == sorted(mine)
