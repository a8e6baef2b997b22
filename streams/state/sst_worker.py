"""Child process of the bulk restore: changelog partitions → sorted RocksDB SST files.

`python -m streams.state.sst_worker` reads a JSON job on stdin (Kafka connection, SST options,
a folder, partitions with offset ranges), reads each range with its own aiokafka consumer and
writes it as SST files of at most `chunk_bytes` of values: within a chunk later records win and
a tombstone becomes a delete, keys sorted as RocksDB's bytewise comparator wants. Each finished
file is announced on stdout as one JSON line `{"topic", "partition", "path", "applied"}`; the
parent ingests the files of a partition in order (later files override earlier ones), so the
parsing and SST building of several partitions run on other cores than the worker's event loop.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka_security import aiokafka_kwargs
from streams.settings import load_settings
from streams.state.plan import ReadRange, applied_after


@dataclass
class Chunk:
    state: dict[bytes, bytes | None] = field(default_factory=dict)
    size: int = 0
    files: int = 0


@dataclass
class Job:
    bootstrap: list[str]
    client_id: str
    max_partition_fetch_bytes: int
    check_crcs: bool
    isolation_level: str
    folder: str
    chunk_bytes: int
    ranges: list[dict[str, Any]]  # topic, partition, start, end, rocksdb (the store's options)


def chunk_add(chunk: Chunk, records: Any, end: int) -> int | None:
    """Add records below `end` (later wins, None = tombstone); returns the last offset added."""
    last = None
    for record in records:
        if record.offset >= end:
            break
        last = record.offset
        if record.key is not None:
            chunk.state[record.key] = record.value
            chunk.size += len(record.key) + len(record.value or b"")
    return last


def sst_options(params: dict[str, Any]) -> rocksdict.Options:
    """The table's RocksDB options as faust builds them for rocksdict (faust.stores.rocksdb
    `RocksDBOptions.as_options`), without importing faust here (a second of start-up)."""
    options = rocksdict.Options(raw_mode=True)
    options.create_if_missing(True)
    options.set_max_open_files(params["max_open_files"])
    options.set_write_buffer_size(params["write_buffer_size"])
    options.set_target_file_size_base(params["target_file_size_base"])
    options.set_max_write_buffer_number(params["max_write_buffer_number"])
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(params["bloom_filter_size"], block_based=True)
    table.set_block_cache(rocksdict.Cache(params["block_cache_size"]))
    table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    options.set_block_based_table_factory(table)
    return options


def write_sst(options: rocksdict.Options, path: Path, state: dict[bytes, bytes | None]) -> None:
    writer = rocksdict.SstFileWriter(options=options)
    writer.open(str(path))
    for key in sorted(state):
        value = state[key]
        if value is None:
            del writer[key]
        else:
            writer[key] = value
    writer.finish()


def announce(tp: TopicPartition, path: Path | None, applied: int) -> None:
    line = {"topic": tp.topic, "partition": tp.partition, "path": path and str(path)}
    sys.stdout.write(json.dumps({**line, "applied": applied}) + "\n")
    sys.stdout.flush()


async def run(job: Job) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=job.bootstrap,
        client_id=job.client_id,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=job.max_partition_fetch_bytes,
        check_crcs=job.check_crcs,
        isolation_level=job.isolation_level,
        **aiokafka_kwargs(load_settings()),  # from the environment the worker passed down
    )
    wanted = {
        TopicPartition(r["topic"], r["partition"]): ReadRange(r["start"], r["end"])
        for r in job.ranges
    }
    options = {
        TopicPartition(r["topic"], r["partition"]): sst_options(r["rocksdb"]) for r in job.ranges
    }
    applied = {tp: r.start - 1 for tp, r in wanted.items()}
    chunks = {tp: Chunk() for tp in wanted}
    await consumer.start()
    try:
        consumer.assign(list(wanted))
        for tp, r in wanted.items():
            consumer.seek(tp, r.start)
        pending = set(wanted)
        while pending:
            fetched = await consumer.getmany(*pending, timeout_ms=500)
            for tp in list(pending):
                r, chunk = wanted[tp], chunks[tp]
                last = chunk_add(chunk, fetched.get(tp, ()), r.end)
                applied[tp] = applied_after(r, last, await consumer.position(tp), applied[tp])
                finished = applied[tp] >= r.end - 1
                if chunk.size >= job.chunk_bytes or (finished and chunk.state):
                    chunk.files += 1
                    path = Path(job.folder) / f"{tp.topic}-{tp.partition}-{chunk.files:05d}.sst"
                    write_sst(options[tp], path, chunk.state)
                    chunks[tp] = Chunk(files=chunk.files)
                    announce(tp, path, applied[tp])
                elif finished:
                    announce(tp, None, applied[tp])
                if finished:
                    consumer.pause(tp)
                    pending.discard(tp)
    finally:
        await consumer.stop()


def main() -> None:
    asyncio.run(run(Job(**json.loads(sys.stdin.read()))))


if __name__ == "__main__":
    main()
