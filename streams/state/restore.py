"""Bulk restore of RocksDB tables from their changelogs, ahead of faust's own recovery.

faust restores a changelog one event at a time (a task pair per message in the consumer's drain
loop, an Event, a queue hop, then a buffered RocksDB batch): 2-4k records/s here, minutes for a
1M-key ledger. Before faust seeks its active changelog partitions, this restores the same ranges
and advances faust's offsets, so faust finds nothing (or only a tail) left to read and carries on
as usual: readiness still waits for its recovery to end, standbys are untouched, a rebalance
cancels the restore and what was stored counts. Tombstones delete, later records win.

- From PROCESS_MIN_RECORDS on, child processes (`streams.state.sst_worker`) read the ranges and
  write sorted SST files; the worker ingests each file (a file move) and then records the
  partition's offset (faust's persisted-offset key). Parsing and SST building use other cores.
- Otherwise (and for whatever the children did not finish) a consumer in the event loop writes
  each fetched batch with the offset key in one WriteBatch, so both move atomically. These writes
  skip the WAL and the memtables are flushed before faust resumes.

Failures and the time budget leave the rest to faust's own recovery, from the offsets reached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import rocksdict
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.base import Collection
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth, server_list
from faust.types import TP, AppT, CollectionT
from prometheus_client import Counter

from streams.compat import (
    SeekHookRecovery,
    encode_persisted_offset,
    has_changelog_callback,
    rocksdb_for_partition,
    rocksdb_offset_key,
    table_manager_with,
)
from streams.errors import exit_worker
from streams.state.plan import ReadRange, add_records, applied_after, read_range

logger = logging.getLogger(__name__)

RESTORED_RECORDS = Counter(
    "torghut_table_bulk_restore_records_total",
    "Changelog records applied to local table stores by the bulk restore.",
    ["table"],
)

KAFKA_DEFAULT_PORT = 9092
BUDGET_SHARE = 0.8  # of broker_request_timeout: faust gives up recovery if a step outlasts it
# The whole bulk restore, flush and clean-up included, must end inside faust's own step timeout;
# past this share of it the worker exits (non-zero) instead of leaving faust's recovery stopped.
HARD_SHARE = 0.95
POLL_MS = 500
# Below this many records the child processes' start-up (~0.5 s) costs more than they save.
PROCESS_MIN_RECORDS = 20_000
CHUNK_BYTES = 128 * 1024 * 1024  # values per SST file (a child holds one chunk per partition)


@dataclass
class Target:
    """One active changelog partition to restore into its RocksDB."""

    tp: TP
    table: str
    db: Any  # rocksdict.Rdict, opened by faust's store
    wanted: ReadRange
    applied: int  # last offset in the store
    options: Any = None  # the store's faust RocksDBOptions (for SST files built elsewhere)

    @property
    def done(self) -> bool:
        return self.applied >= self.wanted.end - 1


def bulk_restorable(table: CollectionT) -> bool:
    """Tables whose recovery is exactly "write the raw records to the partition's RocksDB":
    faust's rocksdict store, no changelog callback, no windows, nothing overridden."""
    store = cast(Any, table).data
    return (
        type(store) is RocksStore
        and bool(store.use_rocksdict)
        and not store.read_only
        and not has_changelog_callback(table)
        and cast(Any, table).window is None
        and type(table).apply_changelog_batch is Collection.apply_changelog_batch
    )


def _consumer(app: AppT) -> AIOKafkaConsumer:
    conf = app.conf
    return AIOKafkaConsumer(
        bootstrap_servers=server_list(conf.broker, KAFKA_DEFAULT_PORT),
        client_id=f"{conf.broker_client_id}-restore",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=conf.consumer_max_fetch_size,
        request_timeout_ms=int(conf.broker_request_timeout * 1000),
        check_crcs=conf.broker_check_crcs,
        isolation_level="read_committed" if app.in_transaction else "read_uncommitted",
        **credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context),
    )


def _kafka_tp(tp: TP) -> TopicPartition:
    return TopicPartition(tp.topic, tp.partition)


def _write(target: Target, records: Iterable[Any], position: int | None, wal: Any) -> int:
    """One fetched batch and the new applied offset, atomically; returns records applied."""
    batch = rocksdict.WriteBatch(raw_mode=True)
    before = target.applied
    last = add_records(batch, ((r.offset, r.key, r.value) for r in records), target.wanted.end)
    target.applied = applied_after(target.wanted, last, position, target.applied)
    if target.applied == before:
        return 0
    batch.put(rocksdb_offset_key(), encode_persisted_offset(target.applied))
    target.db.write(batch, wal)
    return target.applied - before


async def restore(
    app: AppT,
    targets: Sequence[Target],
    budget_seconds: float,
    on_progress: Callable[[Target], None] = lambda target: None,
    *,
    flush_stall: float = 0.0,
) -> int:
    """Apply every target's range (or as much as `budget_seconds` allows); returns the number
    of offsets covered. Cancellation stops between batches; written batches stay valid.
    `on_progress` sees a target after each batch written to its store. `flush_stall` (test
    only) blocks the event loop after the final flush, as a stuck RocksDB flush would."""
    pending = {_kafka_tp(t.tp): t for t in targets if not t.done}
    if not pending:
        return 0
    deadline = time.monotonic() + budget_seconds
    no_wal = rocksdict.WriteOptions()
    no_wal.disable_wal = True  # type: ignore[method-assign,assignment]  # an attribute at runtime
    covered = 0
    consumer = _consumer(app)
    await consumer.start()
    try:
        consumer.assign(list(pending))
        for ktp, target in pending.items():
            consumer.seek(ktp, target.wanted.start)
        while pending and time.monotonic() < deadline:
            fetched = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            for ktp in list(pending):
                target = pending[ktp]
                position = await consumer.position(ktp)
                applied = _write(target, fetched.get(ktp, ()), position, no_wal)
                if applied:
                    covered += applied
                    on_progress(target)
                RESTORED_RECORDS.labels(target.table).inc(len(fetched.get(ktp, ())))
                if target.done:
                    consumer.pause(ktp)
                    del pending[ktp]
    finally:
        await consumer.stop()
        for db in {id(t.db): t.db for t in targets}.values():
            db.flush(True)
        if flush_stall > 0:
            logger.warning("test fault: the bulk restore flush stalls for %.0fs", flush_stall)
            time.sleep(flush_stall)  # noqa: ASYNC251 - blocking on purpose, as a stuck flush
    return covered


def _rocksdb_params(db_options: Any) -> dict[str, Any]:
    names = (
        "max_open_files",
        "write_buffer_size",
        "max_write_buffer_number",
        "target_file_size_base",
        "block_cache_size",
        "bloom_filter_size",
    )
    return {name: getattr(db_options, name) for name in names}


def _split(targets: Sequence[Target], parts: int) -> list[list[Target]]:
    """Targets over `parts` groups, largest first onto the least loaded group."""
    groups: list[list[Target]] = [[] for _ in range(max(1, min(parts, len(targets))))]
    for target in sorted(targets, key=lambda t: -t.wanted.records):
        min(groups, key=lambda g: sum(t.wanted.records for t in g)).append(target)
    return groups


def _job(app: AppT, group: Sequence[Target], folder: Path) -> bytes:
    conf = app.conf
    job = {
        "bootstrap": server_list(conf.broker, KAFKA_DEFAULT_PORT),
        "client_id": f"{conf.broker_client_id}-restore",
        "max_partition_fetch_bytes": conf.consumer_max_fetch_size,
        "check_crcs": conf.broker_check_crcs,
        "isolation_level": "read_committed" if app.in_transaction else "read_uncommitted",
        "folder": str(folder),
        "chunk_bytes": CHUNK_BYTES,
        "ranges": [
            {
                "topic": t.tp.topic,
                "partition": t.tp.partition,
                "start": t.applied + 1,
                "end": t.wanted.end,
                "rocksdb": _rocksdb_params(t.options),
            }
            for t in group
        ],
    }
    return json.dumps(job).encode()


async def _ingest_from(
    proc: asyncio.subprocess.Process,
    by_tp: dict[tuple[str, int], Target],
    on_progress: Callable[[Target], None],
) -> None:
    """Ingest each SST file a child announces, then record the partition's applied offset."""
    assert proc.stdout is not None
    ingest = rocksdict.IngestExternalFileOptions()
    ingest.set_move_files(True)
    async for line in proc.stdout:
        done = json.loads(line)
        target = by_tp[(done["topic"], done["partition"])]
        if done["path"]:
            target.db.ingest_external_file([done["path"]], ingest)
            RESTORED_RECORDS.labels(target.table).inc(done["applied"] - target.applied)
        target.applied = done["applied"]
        target.db.put(rocksdb_offset_key(), encode_persisted_offset(target.applied))
        on_progress(target)
    if await proc.wait() != 0:
        raise RuntimeError(f"restore child exited with {proc.returncode}")


async def restore_in_processes(
    app: AppT,
    targets: Sequence[Target],
    processes: int,
    folder: Path,
    on_progress: Callable[[Target], None] = lambda target: None,
) -> None:
    """Build SST files of the targets' ranges in child processes and ingest them as they come.
    A child that fails leaves its partitions where its last ingested file got them."""
    folder.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once per recovery
    by_tp = {(t.tp.topic, t.tp.partition): t for t in targets}
    procs: list[asyncio.subprocess.Process] = []
    try:
        for group in _split([t for t in targets if not t.done], processes):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "streams.state.sst_worker",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            assert proc.stdin is not None
            proc.stdin.write(_job(app, group, folder))
            proc.stdin.close()
            procs.append(proc)
        results = await asyncio.gather(
            *(_ingest_from(p, by_tp, on_progress) for p in procs), return_exceptions=True
        )
        for error in results:
            if isinstance(error, BaseException):
                logger.warning("bulk restore child failed: %r", error)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        shutil.rmtree(folder, ignore_errors=True)


class BulkRestoreRecovery(SeekHookRecovery):
    """faust's Recovery, with active changelog partitions bulk-restored before it reads them."""

    processes: int = 0  # child processes building SST files (0: all in the event loop)
    flush_stall: float = 0.0  # test only: the final flush blocks this long (a stuck flush)

    async def before_active_seek(self, tps: set[TP], offsets: Any) -> None:
        """The bulk restore finishes, or hands over to faust, inside faust's own timeout; an
        overrun (a flush or a child that does not stop) exits the worker rather than hang:
        every write moved the data and its offset together, so a restart resumes safely."""
        hard = HARD_SHARE * float(self.app.conf.broker_request_timeout)
        why = f"bulk_restore_overrun: not finished within {hard:.0f}s"
        # A thread, too: a RocksDB flush blocks the event loop, where no timeout can fire.
        watchdog = threading.Timer(hard + 1.0, exit_worker, args=(why,))
        watchdog.daemon = True
        watchdog.start()
        try:
            await asyncio.wait_for(self._bulk_restore(tps, offsets), hard)
        except TimeoutError:
            exit_worker(why)
        finally:
            watchdog.cancel()

    def _targets(self, tps: Iterable[TP], offsets: Any) -> list[Target]:
        targets = []
        for tp in sorted(tps):
            table = self.tp_to_table.get(tp)
            if table is None or not bulk_restorable(table):
                continue
            wanted = read_range(offsets.get(tp), self.active_highwaters.get(tp))
            if wanted is None:
                continue
            store = cast(Any, table).data
            db = rocksdb_for_partition(table, tp.partition)
            targets.append(
                Target(tp, table.name, db, wanted, wanted.start - 1, store.rocksdb_options)
            )
        return targets

    async def _bulk_restore(self, tps: set[TP], offsets: Any) -> None:
        targets = self._targets(tps, offsets)
        if not targets:
            return
        started = time.monotonic()
        deadline = started + BUDGET_SHARE * float(self.app.conf.broker_request_timeout)
        wanted = sum(t.wanted.records for t in targets)
        before = sum(t.applied for t in targets)

        def progressed(target: Target) -> None:
            # faust's own bookkeeping: remaining records (readiness, metrics), where it seeks.
            offsets[target.tp] = target.applied

        processes = self.processes if wanted >= PROCESS_MIN_RECORDS else 0
        # Whatever fails or runs out of time here is left to faust's own recovery, which
        # starts from the offsets reached (a failure never stops the worker).
        if processes:
            folder = Path(self.app.conf.tabledir) / f".bulk-restore-{os.getpid()}"
            run = restore_in_processes(self.app, targets, processes, folder, progressed)
            try:
                await asyncio.wait_for(run, timeout=deadline - time.monotonic())
            except Exception as exc:  # noqa: BLE001 - see above
                logger.warning("bulk restore in child processes stopped: %r", exc)
        if not all(t.done for t in targets) and time.monotonic() < deadline:
            try:
                await restore(
                    self.app,
                    targets,
                    deadline - time.monotonic(),
                    progressed,
                    flush_stall=self.flush_stall,
                )
            except Exception as exc:  # noqa: BLE001 - see above
                logger.warning("bulk restore stopped: %r", exc)
        elapsed = time.monotonic() - started
        covered = sum(t.applied for t in targets) - before
        logger.info(
            "bulk restore: %d of %d changelog offsets in %.2fs (%.0f/s, %d processes)%s",
            covered,
            wanted,
            elapsed,
            covered / elapsed if elapsed > 0 else 0.0,
            processes,
            "" if all(t.done for t in targets) else "; faust reads the rest",
            extra={"records": covered, "wanted": wanted, "seconds": elapsed},
        )


def table_manager(processes: int, flush_stall: float = 0.0) -> type[Any]:
    """The `TableManager` app setting: bulk restore, SST files built in `processes` children.
    `flush_stall` is a test-only fault (`TORGHUT_FAULT_RESTORE_FLUSH_STALL_SECONDS`)."""

    def recovery(manager: Any) -> BulkRestoreRecovery:
        built = BulkRestoreRecovery(manager.app, manager, beacon=manager.beacon, loop=manager.loop)
        built.processes = processes
        built.flush_stall = flush_stall
        return built

    return table_manager_with(recovery)
