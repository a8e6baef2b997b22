"""SST files of the bulk restore's child processes, ingested in order, give the changelog's final
state; the work is split evenly over the children."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import rocksdict
from faust.stores.rocksdb import RocksDBOptions
from faust.types import TP

from streams.state.plan import ReadRange
from streams.state.restore import Target, _rocksdb_params, _split
from streams.state.sst_worker import Chunk, chunk_add, sst_options, write_sst


@dataclass
class Rec:
    offset: int
    key: bytes | None
    value: bytes | None


def test_a_chunk_keeps_the_last_value_per_key_and_tombstones() -> None:
    chunk = Chunk()
    records = [Rec(0, b"a", b"1"), Rec(1, b"b", b"22"), Rec(2, b"a", None), Rec(3, None, b"x")]
    assert chunk_add(chunk, records, end=10) == 3
    assert chunk.state == {b"a": None, b"b": b"22"}
    assert chunk.size == 1 + 1 + 1 + 2 + 1  # keys and values as added


def test_a_chunk_stops_at_the_end_of_the_range() -> None:
    chunk = Chunk()
    assert chunk_add(chunk, [Rec(9, b"a", b"1"), Rec(10, b"b", b"1")], end=10) == 9
    assert chunk.state == {b"a": b"1"}


def test_sst_files_ingested_in_order_override_and_delete(tmp_path: Path) -> None:
    params = _rocksdb_params(RocksDBOptions(use_rocksdict=True))
    db = RocksDBOptions(use_rocksdict=True).open(tmp_path / "table-0.db")
    try:
        db[b"kept"] = b"0"
        db[b"gone"] = b"0"
        first, second = tmp_path / "1.sst", tmp_path / "2.sst"
        write_sst(sst_options(params), first, {b"z": b"1", b"a": b"1", b"gone": b"1"})
        write_sst(sst_options(params), second, {b"a": b"2", b"gone": None})
        ingest = rocksdict.IngestExternalFileOptions()
        ingest.set_move_files(True)
        db.ingest_external_file([str(first)], ingest)
        db.ingest_external_file([str(second)], ingest)
        assert dict(db.items()) == {b"a": b"2", b"z": b"1", b"kept": b"0"}
    finally:
        db.close()


def target(partition: int, records: int) -> Target:
    return Target(TP("t", partition), "t", None, ReadRange(0, records), -1)


def test_partitions_are_split_evenly_over_the_children() -> None:
    targets = [target(0, 100), target(1, 60), target(2, 50), target(3, 10)]
    groups = _split(targets, 2)
    loads = sorted(sum(t.wanted.records for t in g) for g in groups)
    assert loads == [110, 110]
    assert sorted(t.tp.partition for g in groups for t in g) == [0, 1, 2, 3]
    assert len(_split(targets[:1], 4)) == 1
