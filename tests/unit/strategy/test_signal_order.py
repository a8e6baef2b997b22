from __future__ import annotations

from datetime import timedelta

from streams.domain.signal_order import (
    SignalOrder,
    WatermarkTracker,
    classify,
    decode_position,
    encode_position,
    position_of,
    should_persist,
)
from tests.unit.strategy.fixtures import T0, make_signal


def test_first_signal_of_a_symbol_is_new() -> None:
    assert classify(make_signal(seq=1), None) is SignalOrder.new


def test_redelivery_is_a_duplicate_and_older_is_stale() -> None:
    last = position_of(make_signal(seq=5, at=T0))
    assert classify(make_signal(seq=5, at=T0), last) is SignalOrder.duplicate
    assert classify(make_signal(seq=4, at=T0), last) is SignalOrder.stale
    assert classify(make_signal(seq=9, at=T0 - timedelta(seconds=1)), last) is SignalOrder.stale
    assert classify(make_signal(seq=6, at=T0), last) is SignalOrder.new
    # event time first: a later window with a restarted seq is still new
    assert classify(make_signal(seq=1, at=T0 + timedelta(seconds=1)), last) is SignalOrder.new


def test_positions_round_trip_and_garbage_reads_as_unknown() -> None:
    position = position_of(make_signal(seq=7, at=T0))
    assert decode_position(encode_position(position)) == position
    assert position[0] % 1000 == 123  # milliseconds kept
    for garbage in (None, "", "abc", "1:x", "12"):
        assert decode_position(garbage) is None


def test_persist_after_decisions_and_otherwise_once_a_minute() -> None:
    persisted = position_of(make_signal(seq=1, at=T0))
    soon = position_of(make_signal(seq=2, at=T0 + timedelta(seconds=59)))
    later = position_of(make_signal(seq=3, at=T0 + timedelta(seconds=60)))
    assert should_persist(soon, None, produced_decisions=False)
    assert should_persist(soon, persisted, produced_decisions=True)
    assert not should_persist(soon, persisted, produced_decisions=False)
    assert should_persist(later, persisted, produced_decisions=False)


def test_tracker_remembers_everything_but_writes_by_policy() -> None:
    store: dict[str, str] = {}
    tracker = WatermarkTracker(store)
    quiet = [make_signal(seq=s, at=T0 + timedelta(seconds=s)) for s in range(1, 5)]
    for signal in quiet:
        assert tracker.classify(signal) is SignalOrder.new
        tracker.advance(signal, produced_decisions=False)
    assert decode_position(store["AAPL"]) == position_of(quiet[0])  # first one only
    assert tracker.classify(quiet[-1]) is SignalOrder.duplicate  # memory knows the rest
    assert tracker.classify(quiet[1]) is SignalOrder.stale

    trade = make_signal(seq=5, at=T0 + timedelta(seconds=5))
    tracker.advance(trade, produced_decisions=True)
    assert decode_position(store["AAPL"]) == position_of(trade)


def test_tracker_rereads_the_store_after_a_rebalance() -> None:
    store: dict[str, str] = {}
    tracker = WatermarkTracker(store)
    tracker.advance(make_signal(seq=1, at=T0), produced_decisions=True)
    # meanwhile another worker owned the partition and advanced the table
    store["AAPL"] = encode_position(position_of(make_signal(seq=9, at=T0)))
    assert tracker.classify(make_signal(seq=5, at=T0)) is SignalOrder.new  # stale memory
    tracker.forget()
    assert tracker.classify(make_signal(seq=5, at=T0)) is SignalOrder.stale
    assert tracker.last("MSFT") is None
