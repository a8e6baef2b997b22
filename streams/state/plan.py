"""What a bulk table restore reads and writes: pure offset arithmetic and record application.

Offsets follow faust's recovery conventions: a partition's *applied* offset is the offset of the
last changelog record already in the local store (-1: none), its *highwater* the offset of the
last record in the log when recovery began (-1: empty log).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ReadRange:
    """Changelog offsets still to apply: `start` (first to read) up to `end` (exclusive)."""

    start: int
    end: int

    @property
    def records(self) -> int:
        return self.end - self.start


def read_range(applied: int | None, highwater: int | None) -> ReadRange | None:
    """The offsets between what the store holds and the log's end (None: nothing to read)."""
    if highwater is None or highwater < 0:
        return None
    start = 0 if applied is None or applied < 0 else applied + 1
    if start > highwater:
        return None
    return ReadRange(start, highwater + 1)


def applied_after(
    wanted: ReadRange, last_offset: int | None, position: int | None, previous: int
) -> int:
    """The applied offset after a batch: every offset below the consumer's position is read
    (compaction and transaction markers leave gaps), capped at the range's last offset."""
    applied = previous
    if last_offset is not None:
        applied = max(applied, min(last_offset, wanted.end - 1))
    if position is not None:
        applied = max(applied, min(position, wanted.end) - 1)
    return applied


class WriteBatchLike(Protocol):
    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


Record = tuple[int, bytes | None, bytes | None]  # (offset, key, value)


def add_records(batch: WriteBatchLike, records: Iterable[Record], end: int) -> int | None:
    """Add changelog records below `end` to a write batch, in log order (later writes win, a
    tombstone deletes); returns the last offset added. Keyless records carry no table state."""
    last: int | None = None
    for offset, key, value in records:
        if offset >= end:
            break
        last = offset
        if key is None:
            continue
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    return last
