"""What every benchmark needs: the stack, topics, databases, the simulator and real workers.

Workers are real `faust -A streams.app worker` subprocesses (tests/support/worker.py) with their
own app id and topics per run (tests/support/stack.py `app_env`), so runs never share state.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import requests
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from prometheus_client.parser import text_string_to_metric_families

from bench.signals import price_of
from simulator.testing import SimulatorProcess
from streams.persistence import migrate
from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, app_env, stack_info, unique
from tests.support.worker import Worker

PARTITIONS = 4  # the same for the raw-Kafka ceiling (B1) and the app's topics (B2-B5)
SIM_RATE_LIMIT = 10_000_000  # per account per minute: the benchmark measures us, not Alpaca's cap
LANE_RATE_LIMIT = 10_000_000
CASH = "1000000000"
Record = tuple[bytes | None, bytes]


def require_stack() -> StackInfo:
    info = stack_info()
    if info is None:
        raise SystemExit("the local stack is not up: run `make bench` / `make bench-quick`")
    return info


# ---------------------------------------------------------------- Kafka


async def ensure_topics(
    stack: StackInfo, names: Iterable[str], compact: Sequence[str] = ()
) -> None:
    await create_topics(stack.bootstrap, list(names), partitions=PARTITIONS, compact=compact)


async def delete_topics(stack: StackInfo, prefix: str) -> None:
    """Drop every topic of one benchmark app (its id prefixes all of them)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def log_append_time(stack: StackInfo, topics: Iterable[str]) -> None:
    """Have the broker stamp the topics' records when it appends them (LogAppendTime): rates read
    from output records then mean the same for every producer (Quix Streams, for one, gives an
    output record its input record's timestamp)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        config = {"cleanup.policy": "delete", "message.timestamp.type": "LogAppendTime"}
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, config) for name in topics]
        )
    finally:
        await admin.close()


async def partition_ids(stack: StackInfo, topic: str) -> list[int]:
    """Partition ids of an existing topic (empty when it does not exist)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for entry in described:
        if entry.get("error_code", 0) == 0 and entry.get("topic") == topic:
            return sorted(p["partition"] for p in entry["partitions"])
    return []


def producer(stack: StackInfo, **kwargs: Any) -> AIOKafkaProducer:
    options: dict[str, Any] = {"acks": "all", "linger_ms": 5, "max_batch_size": 262_144}
    return AIOKafkaProducer(bootstrap_servers=stack.bootstrap, **(options | kwargs))


async def produce_many(
    stack: StackInfo,
    topic: str,
    records: Iterable[Record],
    *,
    partition_of: Any = None,
    window: int = 20_000,
) -> int:
    """Send records as fast as the broker takes them (acks=all), at most `window` in flight."""
    prod = producer(stack, linger_ms=20)
    await prod.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for key, value in records:
            partition = partition_of(key) if partition_of is not None else None
            pending.append(await prod.send(topic, value=value, key=key, partition=partition))
            sent += 1
            if len(pending) >= window:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await prod.stop()
    return sent


@dataclass(frozen=True)
class Seen:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    partition: int


async def read_topic(
    stack: StackInfo, topic: str, *, expect: int | None, timeout: float, idle: float = 3.0
) -> list[Seen]:
    """Every record of `topic` from the beginning: until `expect` arrived, `idle` s of silence
    (when `expect` is None), or `timeout`."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    tps = [TopicPartition(topic, p) for p in await partition_ids(stack, topic)]
    if not tps:
        return []
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: list[Seen] = []
        last = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for msgs in batch.values():
                out.extend(Seen(m.key, m.value, m.timestamp, m.partition) for m in msgs)
                if msgs:
                    last = time.monotonic()
            if expect is not None and len(out) >= expect:
                break
            if expect is None and time.monotonic() - last > idle:
                break
        return out
    finally:
        await consumer.stop()


async def topic_size(stack: StackInfo, topic: str) -> int:
    """Records in a topic (sum of its end offsets; 0 when it does not exist)."""
    tps = [TopicPartition(topic, p) for p in await partition_ids(stack, topic)]
    if not tps:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- Postgres


class Databases:
    """One migrated template per run; each benchmark gets a copy (milliseconds, not a migration)."""

    def __init__(self, stack: StackInfo) -> None:
        self.stack = stack
        self.template: str | None = None
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.stack.database("postgres"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def fresh(self) -> str:
        if self.template is None:
            name = unique("bench_tmpl").replace("-", "_")
            await self._admin(f'CREATE DATABASE "{name}"')
            self.created.append(name)
            await migrate.upgrade(self.stack.database(name), "head", default_account_label="a000")
            self.template = name
        name = unique("bench").replace("-", "_")
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.insert(0, name)
        return self.stack.database(name)

    async def drop_all(self) -> None:
        for name in self.created:
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()


# ---------------------------------------------------------------- simulator and accounts


def labels(k: int) -> list[str]:
    return [f"a{i:03d}" for i in range(k)]


def _keys(label: str) -> tuple[str, str]:
    return f"AK-{label}", f"SK-{label}-bench"


def start_simulator(account_labels: Sequence[str], symbols: Sequence[str]) -> SimulatorProcess:
    config = {
        "accounts": [
            {"label": lb, "key": _keys(lb)[0], "secret": _keys(lb)[1], "cash": CASH}
            for lb in account_labels
        ],
        "assets": [
            {"symbol": s, "class": "us_equity", "exchange": "NASDAQ", "price": str(price_of(s))}
            for s in symbols
        ],
        "rate_limit_per_minute": SIM_RATE_LIMIT,
        "event_log_size": 1000,
    }
    return SimulatorProcess(config, extra_args=("--log-level", "WARNING"))


def accounts_json(sim_url: str, account_labels: Sequence[str]) -> str:
    return json.dumps(
        {
            "accounts": [
                {
                    "label": lb,
                    "mode": "paper",
                    "api_key": _keys(lb)[0],
                    "secret_key": _keys(lb)[1],
                    "base_url": sim_url,
                }
                for lb in account_labels
            ]
        }
    )


def worker_env(tag: str, dsn: str, accounts: str, **extra: str) -> dict[str, str]:
    """An isolated app instance in production configuration, except the request budgets."""
    settings = {
        "DATABASE_URL": dsn,
        "TORGHUT_TOPIC_PARTITIONS": str(PARTITIONS),
        "TRADING_MULTI_ACCOUNT_ENABLED": "true",
        "TRADING_ACCOUNTS_JSON": accounts,
        "TRADING_BROKER_RATE_LIMIT_PER_MINUTE": str(LANE_RATE_LIMIT),
        "TORGHUT_TABLE_STANDBY_REPLICAS": "0",
    }
    return app_env(tag, **(settings | extra))


def app_topic_names(env: Mapping[str, str], control: bool = True) -> list[str]:
    keys = ["TORGHUT_SIGNALS_TOPIC", "TORGHUT_DECISIONS_TOPIC", "TORGHUT_DLQ_TOPIC"]
    keys += ["TRADING_ORDER_FEED_TOPIC", "TRADING_ORDER_FEED_TOPIC_V2"]
    if control:
        keys.append("TORGHUT_CONTROL_TOPIC")
    return [env[k] for k in keys]


async def prepare_app_topics(
    stack: StackInfo, env: Mapping[str, str], control: bool = True
) -> None:
    await ensure_topics(
        stack, app_topic_names(env, control), compact=[env["TORGHUT_CONTROL_TOPIC"]]
    )


# ---------------------------------------------------------------- workers


LOG_DIR = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/torghut-bench-logs"))


class BenchWorker(Worker):
    """A worker whose output is kept in BENCH_LOG_DIR/<name>-<pid>.log once it stops."""

    def __init__(
        self, stack: StackInfo, env: Mapping[str, str], data_dir: Path, name: str = "worker"
    ) -> None:
        super().__init__(stack, env, data_dir, name)
        self.started_at = 0.0

    def save_log(self) -> None:
        if self.proc is not None:
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            (LOG_DIR / f"{self.name}-{self.proc.pid}.log").write_text(self.output)

    def stop(self, timeout: float = 30.0) -> None:
        super().stop(timeout)
        self.save_log()

    def kill(self) -> None:
        super().kill()
        self.save_log()

    def start(self) -> BenchWorker:
        self.started_at = time.monotonic()
        super().start()
        self._maybe_profile()
        return self

    def _maybe_profile(self) -> None:
        """With BENCH_PROFILE_DIR set, py-spy samples the worker for its whole life (raw
        collapsed stacks, `<dir>/<name>-<pid>.txt`; py-spy is pinned in the dev extra)."""
        folder = os.environ.get("BENCH_PROFILE_DIR")
        if not folder:
            return
        Path(folder).mkdir(parents=True, exist_ok=True)
        out = Path(folder) / f"{self.name}-{self.pid}.txt"
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        cmd = [spy, "record", "-p", str(self.pid), "-o", str(out), "-f", "raw", "-r", "200"]
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def readyz(self) -> bool:
        try:
            return self.get("/readyz", timeout=2.0).status_code == 200
        except requests.RequestException:
            return False

    def wait_readyz(self, timeout: float = 120.0, poll: float = 0.05) -> float:
        """Seconds from `start()` until `/readyz` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readyz():
                return time.monotonic() - self.started_at
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(poll)
        raise RuntimeError(f"{self.name}: /readyz not 200 within {timeout}s:\n{self.tail()}")

    def metrics(self) -> dict[str, list[tuple[str, dict[str, str], float]]]:
        """Prometheus samples by family name: [(sample name, labels, value)]."""
        text = self.get("/metrics", timeout=10.0).text
        return {
            family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
            for family in text_string_to_metric_families(text)
        }


class BenchProcess:
    """A helper process of a benchmark (a peer, the I/O floor), run from the repository root;
    its output kept in BENCH_LOG_DIR/<name>-<pid>.log once it stops."""

    def __init__(self, name: str, cmd: Sequence[str], env: Mapping[str, str], workdir: Path):
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(cmd),
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        (LOG_DIR / f"{self.name}-{self.pid}.log").write_bytes(self.log_path.read_bytes())


def proc_status_kib(pid: int, field: str) -> int:
    """A `/proc/<pid>/status` memory field (VmRSS, VmHWM) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmRSS") / 1024.0


def peak_rss_mib(pid: int) -> float:
    return proc_status_kib(pid, "VmHWM") / 1024.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks
