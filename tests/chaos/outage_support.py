"""Chaos-suite helpers: the stack's own Kafka and Postgres stopped and restarted by PID, a
three-account load of decisions, and the count every scenario prints and asserts on.

The servers are the ones `stack/stack.py` started for this test run (`make test`: the test stack,
`make chaos`: the chaos stack, chosen by `TORGHUT_STACK_DIR`). A test that stops one restarts it
in a `finally` and waits until it answers again, so the stack is left as found.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import requests
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.decision import AccountDecision
from simulator.testing import RunningSimulator
from tests.integration.lanes.helpers import PRICES
from tests.support.pg import fetch
from tests.support.stack import ROOT, StackInfo
from tests.support.worker import Worker

# Accounts of the chaos scenarios (the simulator's keys; the registry points at the simulator).
CHAOS_KEYS = {label: (f"AK-{label.upper()}", f"SK-{label.upper()}-secret") for label in (
    "alpha", "beta", "gamma", "delta", "epsilon", "zeta",
)}  # fmt: skip
SYMBOLS = ("AAPL", "MSFT")


# ------------------------------------------------------------------------- the stack's servers
def _stack_script() -> ModuleType:
    """stack/stack.py, loaded under its own name (its STATE_DIR follows TORGHUT_STACK_DIR)."""
    name = "torghut_stack_script"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "stack" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


class StackServers:
    """The Kafka and Postgres processes of the running test stack, by their recorded PIDs."""

    def __init__(self, stack: StackInfo) -> None:
        if not os.environ.get("TORGHUT_STACK_DIR"):
            raise AssertionError(
                "TORGHUT_STACK_DIR is not set: run through `make test`/`make chaos`"
            )
        self.script = _stack_script()
        self.kafka, self.pg, _ = self.script.components()
        # Never touch another stack than the one the tests talk to.
        assert stack.bootstrap == f"127.0.0.1:{self.kafka.port}", (stack.bootstrap, self.kafka.port)
        assert f":{self.pg.port}/" in stack.database_url, (stack.database_url, self.pg.port)

    def kafka_pid(self) -> int | None:
        pid: int | None = self.script.read_pid(self.kafka.pid_file, self.kafka.marker)
        return pid

    def stop_kafka(self) -> None:
        assert self.kafka_pid(), "the stack's Kafka is not running"
        self.kafka.stop()  # SIGTERM to the recorded PID, waits until it is gone

    async def start_kafka(self) -> None:
        if not self.kafka_pid():
            self.kafka.start()
        await self.kafka.wait_ready(timeout=120)

    def stop_postgres(self) -> None:
        assert self.pg.running_pid(), "the stack's Postgres is not running"
        self.pg.stop()  # pg_ctl stop -m fast: every connection is cut

    async def start_postgres(self) -> None:
        if not self.pg.running_pid():
            self.pg.start()
        await self.pg.wait_ready(timeout=60)

    @asynccontextmanager
    async def kafka_down(self) -> AsyncIterator[None]:
        await asyncio.to_thread(self.stop_kafka)
        try:
            yield
        finally:
            await self.start_kafka()

    @asynccontextmanager
    async def postgres_down(self) -> AsyncIterator[None]:
        await asyncio.to_thread(self.stop_postgres)
        try:
            yield
        finally:
            await self.start_postgres()


# ------------------------------------------------------------------------------- simulator
def chaos_simulator(labels: Sequence[str]) -> RunningSimulator:
    accounts = [
        {"label": label, "key": CHAOS_KEYS[label][0], "secret": CHAOS_KEYS[label][1],
         "cash": "10000000"}
        for label in labels
    ]  # fmt: skip
    sim = RunningSimulator({"accounts": accounts})
    sim.admin.set_prices(PRICES)
    return sim


def chaos_registry(sim_url: str, labels: Sequence[str]) -> str:
    return json.dumps(
        {
            "accounts": [
                {
                    "label": label,
                    "mode": "paper",
                    "api_key": CHAOS_KEYS[label][0],
                    "secret_key": CHAOS_KEYS[label][1],
                    "base_url": sim_url,
                }
                for label in labels
            ]
        }
    )


# ------------------------------------------------------------------------------- observation
def probe(worker: Worker, path: str) -> tuple[int | None, Any]:
    """(status, JSON body) of a worker endpoint, or (None, error) when it does not answer."""
    try:
        response = worker.get(path, timeout=3.0)
    except requests.RequestException as exc:
        return None, type(exc).__name__
    try:
        return response.status_code, response.json()
    except ValueError:
        return response.status_code, response.text


def lane_problems(worker: Worker) -> dict[str, list[str]]:
    """account → problems, from the worker's /trading/status (owned lanes only)."""
    status, body = probe(worker, "/trading/status")
    if status != 200 or not isinstance(body, dict):
        return {}
    lanes = body.get("accounts", {})
    return {account: list(lane.get("problems", [])) for account, lane in lanes.items()}


def alive(workers: Iterable[Worker]) -> dict[str, int | None]:
    """worker name → exit code (None: still running)."""
    return {w.name: (w.proc.poll() if w.proc is not None else -999) for w in workers}


async def dead_letters(stack: StackInfo, topic: str) -> list[Any]:
    """Every record of the dead-letter topic (none when it does not exist)."""
    return await read_records(stack, topic, missing_ok=True)


async def read_records(stack: StackInfo, topic: str, *, missing_ok: bool = False) -> list[Any]:
    """Every record of `topic`, read from the start to the end offsets taken once the
    (group-less) subscription has its partitions."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        out: list[Any] = []
        deadline = time.monotonic() + (10 if missing_ok else 30)
        while not consumer.assignment():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(records)
            if time.monotonic() > deadline:
                if missing_ok:
                    return []
                raise AssertionError(f"no partitions of {topic!r} within 30 s")
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while await _behind(consumer, tps, ends):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic!r}: not read to its end within 60 s")
            for records in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(records)
        return out
    finally:
        await consumer.stop()


async def _behind(
    consumer: AIOKafkaConsumer, tps: Sequence[TopicPartition], ends: Mapping[TopicPartition, int]
) -> bool:
    for tp in tps:
        if await consumer.position(tp) < ends[tp]:
            return True
    return False


async def committed_offsets(stack: StackInfo, group: str, topic: str) -> dict[int, int]:
    """partition → the group's committed offset (next to read) on `topic`; absent: none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap, request_timeout_ms=5000)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in committed.items() if tp.topic == topic}


async def end_offsets(stack: StackInfo, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: int(ends[tp]) for tp in tps}


class OffsetSampler:
    """The group's committed offsets of one topic, sampled twice a second with the wall-clock
    time (a timeline for the checks and post-mortems of the rebalance scenarios)."""

    def __init__(self, stack: StackInfo, group: str, topic: str, every: float = 0.5) -> None:
        self.stack, self.group, self.topic, self.every = stack, group, topic, every
        self.samples: list[tuple[float, dict[int, int]]] = []
        self.errors = 0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                offsets = await committed_offsets(self.stack, self.group, self.topic)
                self.samples.append((time.time(), offsets))
            except Exception:  # a coordinator moving: the next sample counts
                self.errors += 1
            await asyncio.sleep(self.every)

    def passed(self, partition: int, offset: int) -> tuple[float, int] | None:
        """(time, committed) of the first sample whose committed offset is past `offset`."""
        for at, offsets in self.samples:
            committed = offsets.get(partition, -1)
            if committed > offset:
                return at, committed
        return None


TIMELINE_KEYS = (
    "Joined group",
    "Revoking previously",
    "skipped by",
    "Seek stream partitions",
    "Resuming flow",
    "Restoring state",
    "Recovery complete",
    "Worker ready",
    "Discarded commit",
    "OffsetCommit failed",
    "crashed",
)
ASSIGNED = re.compile(r"Setting newly assigned partitions (\{.*\})")


def assignment_timeline(workers: Iterable[Worker], topic: str) -> list[str]:
    """Per worker, each assignment of `topic`'s partitions with its log time (faust logs the
    whole assignment at every rebalance), revocations and generation changes."""
    part = re.compile(rf"TopicPartition\(topic='{re.escape(topic)}', partition=(\d+)\)")
    out: list[str] = []
    for w in workers:
        for line in w.lines:
            stamp = line[1:24] if line.startswith("[") else ""
            match = ASSIGNED.search(line)
            if match:
                mine = sorted(int(p) for p in part.findall(match.group(1)))
                out.append(f"{stamp} {w.name} assigned {topic.rsplit('.', 2)[-2]} {mine}")
            elif any(k in line for k in TIMELINE_KEYS):
                out.append(f"{stamp} {w.name} {line[26:200]}")
    return sorted(out)


def save_logs(workers: Iterable[Worker], folder: Path) -> list[str]:
    """Every worker's whole output to `folder/<name>.log` (kept for a post-mortem)."""
    paths = []
    for w in workers:
        path = folder / f"{w.name}.log"
        path.write_text(w.output + "\n")
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------------------- the count
@dataclass
class Count:
    """What a scenario counted, from the simulator and Postgres; printed in one block."""

    scenario: str
    expected: dict[str, set[str]]  # account → decision hashes sent to it
    orders: dict[str, Counter[str]] = field(default_factory=dict)  # account → coid → n
    decision_rows: dict[str, Counter[str]] = field(default_factory=dict)
    execution_rows: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # decision event time → broker order
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def decisions(self) -> int:
        return sum(len(h) for h in self.expected.values())

    def missing_orders(self) -> dict[str, list[str]]:
        return {
            a: sorted(h - set(self.orders.get(a, {})))[:5]
            for a, h in self.expected.items()
            if h - set(self.orders.get(a, {}))
        }

    def duplicate_orders(self) -> dict[str, dict[str, int]]:
        return {
            a: {c: n for c, n in counts.items() if n > 1}
            for a, counts in self.orders.items()
            if any(n > 1 for n in counts.values())
        }

    def foreign(self) -> dict[str, list[str]]:
        """Orders or rows under an account whose hash was sent to another (or to none)."""
        out: dict[str, list[str]] = {}
        for kind, table in (
            ("order", self.orders),
            ("trade_decisions", self.decision_rows),
            ("executions", self.execution_rows),
        ):
            for account, counts in table.items():
                stray = set(counts) - self.expected.get(account, set())
                if stray:
                    out.setdefault(account, []).extend(f"{kind}:{h[:12]}" for h in sorted(stray))
        return out

    def finished(self) -> bool:
        """Every decision has its broker order and its executions row."""
        return not self.missing_orders() and all(
            h <= set(self.execution_rows.get(a, {})) for a, h in self.expected.items()
        )

    def report(self) -> str:
        def pct(q: float) -> float | None:
            if not self.latencies:
                return None
            ordered = sorted(self.latencies)
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

        body = {
            "scenario": self.scenario,
            "decisions": self.decisions,
            "decisions_per_account": {a: len(h) for a, h in sorted(self.expected.items())},
            "broker_orders_per_account": {
                a: sum(c.values()) for a, c in sorted(self.orders.items())
            },
            "distinct_client_order_ids_per_account": {
                a: len(c) for a, c in sorted(self.orders.items())
            },
            "orders_per_client_order_id": dict(
                sorted(Counter(n for c in self.orders.values() for n in c.values()).items())
            ),
            "trade_decisions_rows_per_account": {
                a: sum(c.values()) for a, c in sorted(self.decision_rows.items())
            },
            "executions_rows_per_account": {
                a: sum(c.values()) for a, c in sorted(self.execution_rows.items())
            },
            "missing_orders": self.missing_orders(),
            "duplicate_orders": self.duplicate_orders(),
            "rows_or_orders_under_another_account": self.foreign(),
            "signal_to_ack_seconds": {
                "n": len(self.latencies),
                "p50": pct(0.5),
                "p95": pct(0.95),
                "max": round(max(self.latencies), 3) if self.latencies else None,
                "mean": round(statistics.fmean(self.latencies), 3) if self.latencies else None,
            },
            **self.extra,
        }
        line = "=" * 30
        rows = "\n".join(f"{key}: {json.dumps(value)}" for key, value in body.items())
        return f"\n{line} chaos {self.scenario} {line}\n{rows}\n{line * 2}"


async def count(
    scenario: str,
    sim: RunningSimulator,
    dsn: str,
    sent: Mapping[str, Sequence[AccountDecision]],
) -> Count:
    """Orders at the simulator (by client order id, per account) and rows in Postgres."""
    expected = {a: {d.decision_hash for d in ds} for a, ds in sent.items()}
    event_ts = {d.decision_hash: d.event_ts for ds in sent.values() for d in ds}
    result = Count(scenario, expected)
    labels = sorted(set(sent) | {a["label"] for a in sim.admin.call("GET", "/admin/accounts")})
    for label in labels:
        orders = await asyncio.to_thread(sim.admin.orders, label)
        result.orders[label] = Counter(o["client_order_id"] for o in orders)
        for o in orders:
            at = event_ts.get(o["client_order_id"])
            if at is not None:
                created = datetime.fromisoformat(o["created_at"].replace("Z", "+00:00"))
                result.latencies.append((created - at).total_seconds())
    for table, column, target in (
        ("trade_decisions", "decision_hash", result.decision_rows),
        ("executions", "client_order_id", result.execution_rows),
    ):
        rows = await fetch(dsn, f"SELECT alpaca_account_label AS a, {column} AS h FROM {table}")
        grouped: dict[str, Counter[str]] = defaultdict(Counter)
        for row in rows:
            grouped[row["a"]][row["h"]] += 1
        target.update(grouped)
    return result


async def wait_counted(
    scenario: str,
    sim: RunningSimulator,
    dsn: str,
    sent: Mapping[str, Sequence[AccountDecision]],
    timeout: float,
) -> Count:
    """Count until every decision has its order and executions row (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await count(scenario, sim, dsn, sent)
        except (OSError, asyncpg.PostgresError):
            result = None
        if result is not None and (result.finished() or time.monotonic() > deadline):
            return result
        if result is None and time.monotonic() > deadline:
            raise AssertionError(f"{scenario}: Postgres did not answer within {timeout}s")
        await asyncio.sleep(1.0)


def assert_counted(result: Count) -> None:
    """Exactly one broker order per decision per account, every decision present, nothing of
    one account under another, and one decision row and one executions row per decision."""
    assert not result.missing_orders(), result.missing_orders()
    assert not result.duplicate_orders(), result.duplicate_orders()
    assert not result.foreign(), result.foreign()
    for account, hashes in result.expected.items():
        assert set(result.orders[account]) == hashes, account
        assert result.decision_rows.get(account, Counter()) == Counter(hashes), account
        assert result.execution_rows.get(account, Counter()) == Counter(hashes), account


def data_dir(tmp: Path, name: str) -> Path:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return path
