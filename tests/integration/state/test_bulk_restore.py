"""The ledger comes back complete after a worker lost its local state, through the bulk restore.

The ledger's changelog is filled the way faust writes it (raw key `account|hash`, raw JSON value,
on the account's partition), with later versions of some keys and tombstones for others. A
worker restores it, is SIGKILLed, its data dir is deleted and it starts again; once ready it is
SIGKILLed again and its RocksDB files are read directly: exactly the changelog's final state,
and faust's persisted offsets at the end of each partition.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import requests
import rocksdict
from aiokafka import AIOKafkaProducer
from faust.stores.rocksdb import Store as RocksStore

from bench.b5_recovery import ledger_records
from streams.ownership import partition_for as partition_for_key
from tests.support.kafka import create_topics
from tests.support.stack import StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

PARTITIONS = 4
ACCOUNTS = ["acct-a", "acct-b", "acct-c", "acct-d", "acct-e"]
KEYS = 25_000  # from 20,000 records on, child processes build SST files (streams/state)
SMALL = 6_000  # restored in the worker's event loop
REWRITTEN = range(1_000, 1_400)  # a later version of these keys follows
DELETED = range(0, 300)  # then a tombstone for these
Changes = list[tuple[bytes, bytes | None]]


def changelog_changes(keys: int) -> Changes:
    """The changelog in log order: every key, then rewrites, then tombstones."""
    first = list(ledger_records(ACCOUNTS, keys))
    rewrites = [(first[i][0], first[i][1].replace(b'"qty":"9"', b'"qty":"7"')) for i in REWRITTEN]
    assert all(new != first[i][1] for i, (_, new) in zip(REWRITTEN, rewrites, strict=True))
    tombstones: Changes = [(first[i][0], None) for i in DELETED]
    return [*first, *rewrites, *tombstones]


def final_state(changes: Changes) -> dict[bytes, bytes]:
    state: dict[bytes, bytes] = {}
    for key, value in changes:
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    return state


def partition_of(key: bytes) -> int:
    return partition_for_key(key.split(b"|", 1)[0], PARTITIONS)


async def fill(bootstrap: str, topic: str, changes: Changes) -> dict[int, int]:
    """Produce in order; returns the highest offset written per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=k, value=v, partition=partition_of(k))
            for k, v in changes
        ]
        last: dict[int, int] = {}
        for fut in futures:
            meta = await fut
            last[meta.partition] = max(last.get(meta.partition, -1), meta.offset)
        return last
    finally:
        await producer.stop()


def ledger_dbs(data_dir: Path) -> dict[int, Path]:
    found = {
        int(m.group(1)): p
        for p in data_dir.rglob("lane-ledger-*.db")
        if (m := re.fullmatch(r"lane-ledger-(\d+)\.db", p.name))
    }
    assert found, f"no ledger RocksDB under {data_dir}"
    return found


def read_db(path: Path) -> Iterator[tuple[bytes, bytes]]:
    db = rocksdict.Rdict(
        str(path),
        options=rocksdict.Options(raw_mode=True),
        access_type=rocksdict.AccessType.read_only(),
    )
    try:
        yield from db.items()
    finally:
        db.close()


def stored(data_dir: Path) -> tuple[dict[bytes, bytes], dict[int, int]]:
    """(every ledger key → value, faust's persisted offset per partition) from the files."""
    items: dict[bytes, bytes] = {}
    offsets: dict[int, int] = {}
    for partition, path in ledger_dbs(data_dir).items():
        for key, value in read_db(path):
            if key == RocksStore.offset_key:
                offsets[partition] = int(value)
            else:
                assert partition_of(key) == partition, key
                items[key] = value
    return items, offsets


def wait_owning_all(worker: Worker, topic: str, timeout: float) -> None:
    """Until the worker owns every partition of `topic` and is ready (recovery done)."""
    every = {f"{topic}:{p}" for p in range(PARTITIONS)}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = worker.get("/trading/status").json()
            owned = {tp for tp in status["worker"]["owned_partitions"] if tp.startswith(topic)}
            ready = worker.get("/readyz").status_code == 200
        except requests.RequestException:
            owned, ready = set(), False
        if owned == every and ready:
            return
        time.sleep(0.2)
    raise AssertionError(f"{worker.name} did not take over every partition:\n{worker.tail()}")


def log_time(line: str) -> datetime:
    """The local time of a worker's text log line (`[2026-11-21 14:43:01,263] ...`)."""
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def bulk_restored(worker: Worker) -> list[tuple[int, int, int]]:
    """(offsets restored, offsets wanted, child processes) of every bulk restore logged."""
    pattern = r"bulk restore: (\d+) of (\d+) .*, (\d+) processes"
    found = (re.search(pattern, line) for line in worker.lines)
    return [(int(m.group(1)), int(m.group(2)), int(m.group(3))) for m in found if m]


async def filled_ledger(
    stack: StackInfo, tag: str, standby_replicas: int, keys: int
) -> tuple[dict[str, str], Changes, dict[int, int]]:
    """A fresh app's topics, its ledger changelog filled with `keys` keys' changes."""
    env = app_env(tag, TORGHUT_TABLE_STANDBY_REPLICAS=str(standby_replicas))
    changelog = f"{env['TORGHUT_APP_ID']}-lane-ledger-changelog"
    await create_topics(
        stack.bootstrap,
        [*app_topics(env), changelog],
        partitions=PARTITIONS,
        compact=[env["TORGHUT_CONTROL_TOPIC"], changelog],
    )
    changes = changelog_changes(keys)
    return env, changes, await fill(stack.bootstrap, changelog, changes)


async def test_a_worker_that_lost_its_state_restores_every_ledger_key(
    stack: StackInfo, workers: list[Worker], tmp_path: Path
) -> None:
    env, changes, last_offsets = await filled_ledger(stack, "state-restore", 0, KEYS)
    expected = final_state(changes)
    assert len(expected) == KEYS - len(DELETED)

    data = tmp_path / "data"
    first = Worker(stack, env, data, "first").start()
    workers.append(first)
    first.wait_ready(180)
    first.kill()
    shutil.rmtree(data)

    again = Worker(stack, env, data, "restarted").start()
    workers.append(again)
    again.wait_ready(180)
    ready_at = datetime.now()  # local time, as in the worker's log lines
    again.kill()  # no shutdown hooks: the restore must already be on disk

    # not ready before the restore ended
    restored_at = [log_time(line) for line in again.lines if "bulk restore:" in line]
    assert restored_at and max(restored_at) <= ready_at

    restores = bulk_restored(again)
    assert restores and sum(w for _, w, _ in restores) == len(changes)
    assert all(done == wanted and processes > 0 for done, wanted, processes in restores)
    assert not any("Restoring state from changelog topics" in line for line in again.lines), (
        "faust's own recovery had records left to read"
    )
    items, offsets = stored(data)
    assert items.keys() == expected.keys()
    assert all(items[key] == value for key, value in expected.items())
    assert offsets == last_offsets


async def test_a_standby_takes_over_with_the_complete_ledger(
    stack: StackInfo, workers: list[Worker], tmp_path: Path
) -> None:
    env, changes, last_offsets = await filled_ledger(stack, "state-standby", 1, SMALL)

    active = Worker(stack, env, tmp_path / "a", "active").start()
    workers.append(active)
    active.wait_ready(180)
    survivor = Worker(stack, env, tmp_path / "b", "survivor").start()
    workers.append(survivor)
    survivor.wait_ready(180)
    active.kill()
    # the dead member's partitions move after its session timeout, then a new recovery
    wait_owning_all(survivor, env["TORGHUT_DECISIONS_TOPIC"], timeout=120)
    survivor.kill()

    items, offsets = stored(tmp_path / "b")
    expected = final_state(changes)
    assert items.keys() == expected.keys()
    assert all(items[key] == value for key, value in expected.items())
    assert offsets == last_offsets
