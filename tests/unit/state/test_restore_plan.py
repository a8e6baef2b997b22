"""The bulk restore's offset arithmetic and record application (streams/state/plan.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.state.plan import ReadRange, Record, add_records, applied_after, read_range


class RecordingBatch:
    """A write batch that applies operations to a dict, as RocksDB would."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.operations = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.state[key] = value
        self.operations += 1

    def delete(self, key: bytes) -> None:
        self.state.pop(key, None)
        self.operations += 1


def test_empty_log_or_store_up_to_date_reads_nothing() -> None:
    assert read_range(None, None) is None
    assert read_range(-1, -1) is None
    assert read_range(41, 41) is None
    assert read_range(50, 41) is None  # faust's consistency check reports this case


def test_range_starts_after_the_applied_offset_and_ends_past_the_highwater() -> None:
    assert read_range(None, 9) == ReadRange(0, 10)
    assert read_range(-1, 9) == ReadRange(0, 10)
    assert read_range(4, 9) == ReadRange(5, 10)
    assert ReadRange(5, 10).records == 5


def test_applied_offset_follows_records_and_the_consumer_position() -> None:
    wanted = ReadRange(0, 10)
    assert applied_after(wanted, None, None, -1) == -1
    assert applied_after(wanted, 3, 4, -1) == 3
    # gaps (compaction, transaction markers): the position says everything below it is read
    assert applied_after(wanted, 3, 8, -1) == 7
    assert applied_after(wanted, None, 10, 3) == 9
    # never beyond the range (records written after recovery began are faust's), never back
    assert applied_after(wanted, 12, 13, 5) == 9
    assert applied_after(wanted, None, 2, 5) == 5


def test_later_records_win_and_tombstones_delete() -> None:
    batch = RecordingBatch()
    records: list[Record] = [
        (0, b"a", b"1"),
        (1, b"b", b"1"),
        (2, b"a", b"2"),
        (3, b"b", None),
        (4, None, b"ignored"),
        (5, b"c", b"1"),
    ]
    assert add_records(batch, records, end=10) == 5
    assert batch.state == {b"a": b"2", b"c": b"1"}


def test_records_at_or_past_the_end_are_left_to_faust() -> None:
    batch = RecordingBatch()
    assert add_records(batch, [(8, b"a", b"1"), (9, b"b", b"1"), (10, b"c", b"1")], 10) == 9
    assert batch.state == {b"a": b"1", b"b": b"1"}
    assert add_records(RecordingBatch(), [(10, b"c", b"1")], 10) is None
    assert add_records(RecordingBatch(), [], 10) is None


changes = st.lists(
    st.tuples(st.sampled_from([b"k1", b"k2", b"k3"]), st.none() | st.binary(max_size=3)),
    max_size=40,
)


@given(changes, st.integers(min_value=1, max_value=8))
def test_batches_in_any_split_give_the_log_replayed_in_order(
    log: list[tuple[bytes, bytes | None]], chunk: int
) -> None:
    replayed: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            replayed.pop(key, None)
        else:
            replayed[key] = value
    batch = RecordingBatch()
    records = [(offset, key, value) for offset, (key, value) in enumerate(log)]
    for i in range(0, len(records), chunk):
        add_records(batch, records[i : i + chunk], end=len(records))
    assert batch.state == replayed
