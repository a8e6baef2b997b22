"""Per-symbol ordering of TA signals: drop what is not newer than the last (event_ts, seq) seen.

Upstream delivers at least once, so a redelivered signal is a duplicate (same position) and an
out-of-order one is stale (older position). Positions are stored as compact text in a table.

Persistence policy (throughput): the position is written to the changelog-backed table when the
signal produced decisions (those must never be produced twice) and otherwise at most once per
`PERSIST_EVERY_MS` of event time per symbol; the latest position is always kept in memory. After
a restart the few signals since the last write, none of which produced a decision, are simply
evaluated again: the runtime is deterministic, so they still produce none.

Bounded: a position more than `max_future_ms` ahead of the clock is never recorded, and a stored
one (written before this rule, or by a bad clock) is ignored with a warning; one future-dated
record must not make every later signal of its symbol stale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from schemas.ta_signal import TaSignal

log = logging.getLogger(__name__)

Position = tuple[int, int]  # (event time in epoch milliseconds, seq)

PERSIST_EVERY_MS = 60_000


class SignalOrder(str, Enum):
    new = "new"
    duplicate = "duplicate"
    stale = "stale"


def epoch_millis(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def position_of(signal: TaSignal) -> Position:
    return (epoch_millis(signal.event_ts), signal.seq)


def encode_position(position: Position) -> str:
    return f"{position[0]}:{position[1]}"


def decode_position(text: str | None) -> Position | None:
    """None for absent or unreadable text (an unreadable watermark must not block a symbol)."""
    if not text:
        return None
    millis, sep, seq = text.partition(":")
    try:
        return (int(millis), int(seq)) if sep else None
    except ValueError:
        return None


def classify(signal: TaSignal, last: Position | None) -> SignalOrder:
    position = position_of(signal)
    if last is None or position > last:
        return SignalOrder.new
    return SignalOrder.duplicate if position == last else SignalOrder.stale


def should_persist(
    position: Position, persisted: Position | None, produced_decisions: bool
) -> bool:
    """Write the position to the table now? Always after decisions, else once a minute."""
    if produced_decisions or persisted is None:
        return True
    return position[0] - persisted[0] >= PERSIST_EVERY_MS


class PositionStore(Protocol):
    """The table's surface used here (a faust Table, or a dict in tests)."""

    def get(self, key: str) -> str | None: ...

    def __setitem__(self, key: str, value: str) -> None: ...


class WatermarkTracker:
    """Positions per symbol: in memory for every signal, in `store` by `should_persist`.

    The memory covers the symbols processed since the last rebalance; `forget()` (on partition
    revocation) makes the next signal of a symbol read the store again, which another worker may
    have advanced meanwhile.
    """

    def __init__(
        self,
        store: PositionStore,
        *,
        max_future_ms: int | None = None,
        now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self._store = store
        self._seen: dict[str, Position] = {}
        self._persisted: dict[str, Position] = {}
        self._max_future_ms = max_future_ms
        self._now_ms = now_ms

    def _in_future(self, position: Position) -> bool:
        limit = self._max_future_ms
        return limit is not None and position[0] > self._now_ms() + limit

    def last(self, symbol: str) -> Position | None:
        last = self._seen.get(symbol)
        if last is None:
            last = decode_position(self._store.get(symbol))
            if last is not None and self._in_future(last):
                log.warning(
                    "ignoring a watermark in the future for %s", symbol, extra={"symbol": symbol}
                )
                return None  # the next signal of the symbol overwrites it
            if last is not None:
                self._seen[symbol] = self._persisted[symbol] = last
        return last

    def classify(self, signal: TaSignal) -> SignalOrder:
        return classify(signal, self.last(signal.symbol))

    def advance(self, signal: TaSignal, produced_decisions: bool) -> None:
        """Record `signal` as processed (inside the signal's event: the store's partition)."""
        position = position_of(signal)
        if self._in_future(position):
            return  # the signals stage dead-letters these first; never a watermark
        self._seen[signal.symbol] = position
        if should_persist(position, self._persisted.get(signal.symbol), produced_decisions):
            self._store[signal.symbol] = encode_position(position)
            self._persisted[signal.symbol] = position

    def forget(self, *args: Any, **kwargs: Any) -> None:
        """Drop the in-memory positions (a signal receiver: takes and ignores any arguments)."""
        self._seen.clear()
        self._persisted.clear()
