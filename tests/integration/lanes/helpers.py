"""Decisions, simulator accounts, worker environments and polling for the lanes tests."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr

from schemas.codecs import encode_control, encode_decision
from schemas.control import ControlCommand, control_key
from schemas.decision import AccountDecision, Action
from simulator.testing import RunningSimulator
from streams.domain.accounts import Account, AccountMode
from streams.domain.hashing import decision_hash
from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder
from tests.integration.persistence.conftest import _create, _drop
from tests.support.kafka import create_topics, produce
from tests.support.pg import fetch
from tests.support.stack import ROOT, StackInfo, app_env, app_topics, unique
from tests.support.worker import Worker

T = TypeVar("T")

KEYS = {
    "alpha": ("AK-ALPHA", "SK-ALPHA-secret"),
    "beta": ("AK-BETA", "SK-BETA-secret"),
    "gamma": ("AK-GAMMA", "SK-GAMMA-secret"),
    "delta": ("AK-DELTA", "SK-DELTA-secret"),
    "epsilon": ("AK-EPSILON", "SK-EPSILON-secret"),
}
PRICES = {"AAPL": "100", "MSFT": "200", "BTC/USD": "50000"}
_seq = count(1)
ACK_LINE = re.compile(r"order acknowledged by the broker in ([0-9.]+) ms")


def simulator(labels: Sequence[str] = ("alpha", "beta"), **overrides: Any) -> RunningSimulator:
    accounts = [
        {"label": label, "key": KEYS[label][0], "secret": KEYS[label][1], "cash": "100000"}
        for label in labels
    ]
    sim = RunningSimulator({"accounts": accounts}, **overrides)
    sim.admin.set_prices(PRICES)
    return sim


def registry(
    sim_url: str,
    labels: Sequence[str],
    bad: Sequence[str] = (),
    limits: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """TRADING_ACCOUNTS_JSON: `labels` with the simulator's keys, `bad` with unknown keys;
    `limits`: per-account limit overrides by label."""
    entries = [
        {
            "label": label,
            "mode": "paper",
            "api_key": KEYS[label][0],
            "secret_key": KEYS[label][1],
            "base_url": sim_url,
            **({"limits": dict(limits[label])} if limits and label in limits else {}),
        }
        for label in labels
    ] + [
        {
            "label": label,
            "mode": "paper",
            "api_key": f"AK-WRONG-{label}",
            "secret_key": f"SK-WRONG-{label}",
            "base_url": sim_url,
        }
        for label in bad
    ]
    return json.dumps({"accounts": entries})


def lane_env(tag: str, dsn: str, accounts_json: str, **extra: str) -> dict[str, str]:
    return app_env(
        tag,
        DATABASE_URL=dsn,
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=accounts_json,
        TRADING_BROKER_TIMEOUT_SECONDS="1.5",
        TRADING_MAX_DECISION_AGE_SECONDS="120",
        TRADING_FLAGS_REFRESH_SECONDS="1",
        TORGHUT_TABLE_STANDBY_REPLICAS="0",
        **extra,
    )


async def prepare_topics(stack: StackInfo, env: Mapping[str, str]) -> None:
    await create_topics(
        stack.bootstrap, app_topics(dict(env)), compact=[env["TORGHUT_CONTROL_TOPIC"]]
    )


def decision(
    account: str,
    symbol: str = "AAPL",
    action: str = "buy",
    notional: str = "1000",
    price: str | None = None,
    age: timedelta = timedelta(0),
) -> AccountDecision:
    """A decision with a unique event time (so a unique hash)."""
    event_ts = datetime.now(UTC) - age + timedelta(milliseconds=next(_seq))
    identity = {
        "account_label": account,
        "symbol": symbol,
        "timeframe": "1Sec",
        "event_ts": event_ts,
        "action": action,
    }
    return AccountDecision(
        decision_hash=decision_hash(**identity),
        strategy_id="lanes-test",
        symbol=symbol,
        timeframe="1Sec",
        account_label=account,
        event_ts=event_ts,
        action=Action(action),
        notional=Decimal(notional),
        confidence=0.9,
        price=Decimal(price or PRICES[symbol]),
        emitted_at=datetime.now(UTC),
    )


async def send(stack: StackInfo, env: Mapping[str, str], *decisions: AccountDecision) -> None:
    await produce(
        stack.bootstrap,
        env["TORGHUT_DECISIONS_TOPIC"],
        [(d.account_label.encode(), encode_decision(d)) for d in decisions],
    )


async def decision_row(dsn: str, d: AccountDecision) -> asyncpg.Record | None:
    rows = await fetch(
        dsn,
        "SELECT status, rejection_reasons FROM trade_decisions "
        "WHERE alpaca_account_label = $1 AND decision_hash = $2",
        d.account_label,
        d.decision_hash,
    )
    return rows[0] if rows else None


async def executions(dsn: str, d: AccountDecision) -> list[asyncpg.Record]:
    return await fetch(
        dsn,
        "SELECT alpaca_account_label, client_order_id, alpaca_order_id, status FROM executions "
        "WHERE client_order_id = $1",
        d.decision_hash,
    )


def broker_orders(sim: RunningSimulator, d: AccountDecision) -> list[dict[str, Any]]:
    return [o for o in sim.admin.orders(d.account_label) if o["client_order_id"] == d.decision_hash]


async def wait_until(
    check: Callable[[], Awaitable[T | None]], timeout: float = 40.0, what: str = "condition"
) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_status(dsn: str, d: AccountDecision, status: str, timeout: float = 40.0) -> Any:
    async def check() -> Any:
        row = await decision_row(dsn, d)
        return row if row is not None and row["status"] == status else None

    return await wait_until(check, timeout, f"{d.account_label} decision {status}")


async def wait_executed(dsn: str, d: AccountDecision, timeout: float = 40.0) -> list[Any]:
    async def check() -> list[Any] | None:
        rows = await executions(dsn, d)
        return rows or None

    return await wait_until(check, timeout, f"{d.account_label} execution")


def reasons(row: Any) -> list[str]:
    value = row["rejection_reasons"]
    return list(json.loads(value) if isinstance(value, str) else value)


def start_worker(stack: StackInfo, env: Mapping[str, str], data_dir: Path, name: str) -> Worker:
    worker = Worker(stack, env, data_dir, name=name).start()
    worker.wait_ready(timeout=120)
    return worker


def ack_latencies_ms(worker: Worker) -> list[float]:
    """consume→ack per order, from the worker's "order acknowledged ... in X ms" lines."""
    found = (ACK_LINE.search(line) for line in worker.lines)
    return [float(m.group(1)) for m in found if m]


async def topic_values(stack: StackInfo, topic: str, idle: float = 2.0) -> list[bytes]:
    """Every record value of `topic` from the beginning, until `idle` s without a new one."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=stack.bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        out: list[bytes] = []
        last = time.monotonic()
        while time.monotonic() - last < idle:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                out.extend(r.value for r in records if r.value is not None)
                last = time.monotonic() if records else last
        return out
    finally:
        await consumer.stop()


@dataclass
class World:
    stack: StackInfo
    env: dict[str, str]
    dsn: str
    sim: RunningSimulator
    worker: Worker

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = self.worker.get("/trading/status").json()
        return body

    def lane(self, label: str) -> dict[str, Any]:
        lane: dict[str, Any] = self.status()["accounts"][label]
        return lane

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "faust", "-A", "streams.app", *args],
            cwd=ROOT,
            env=self.worker.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    async def control(self, command: ControlCommand) -> None:
        await produce(
            self.stack.bootstrap,
            self.env["TORGHUT_CONTROL_TOPIC"],
            [(control_key(command), encode_control(command))],
        )

    async def state(self, label: str, value: str) -> None:
        async def check() -> bool:
            return bool(self.lane(label)["trading_state"]["state"] == value)

        await wait_until(check, 20, f"{label} trading state {value}")

    async def actions(self, label: str) -> list[Any]:
        return await fetch(
            self.dsn,
            "SELECT command_id, kind, action, scope, operator, reason, status, attempts, result "
            "FROM control_actions WHERE alpaca_account_label = $1 ORDER BY id",
            label,
        )


@contextmanager
def running_world(
    stack: StackInfo,
    head_template: str,
    tmp_path_factory: Any,
    tag: str,
    labels: Sequence[str],
    *,
    limits: Mapping[str, Mapping[str, Any]] | None = None,
    fill_delay_ms: int | None = None,
    **settings: str,
) -> Iterator[World]:
    """One worker over its own database (at head), simulator accounts `labels` and topics;
    `settings` are the worker's extra environment. Everything is stopped and dropped after."""
    name = unique(tag).replace("-", "_")
    dsn = asyncio.run(_create(stack, name, template=head_template))
    sim = (
        simulator(labels)
        if fill_delay_ms is None
        else simulator(labels, fill_delay_ms=fill_delay_ms)
    )
    env = lane_env(tag, dsn, registry(sim.url, labels, limits=limits), **settings)
    asyncio.run(prepare_topics(stack, env))
    data_dir = tmp_path_factory.mktemp(tag)
    worker = start_worker(stack, env, data_dir, tag)
    world = World(stack, env, dsn, sim, worker)
    try:
        yield world
    finally:
        world.worker.stop()
        (data_dir / "worker.log").write_text(world.worker.output)
        sim.stop()
        asyncio.run(_drop(stack, name))


@asynccontextmanager
async def forwarding(
    stack: StackInfo, env: Mapping[str, str], sim: Any, labels: Sequence[str]
) -> AsyncIterator[TradeUpdatesForwarder]:
    """The trade-updates forwarder of `labels` (simulator websockets → the worker's v1/v2
    topics), as in production: executions close through the order feed, not REST look-ups."""
    accounts = [
        Account(
            label=label,
            mode=AccountMode.paper,
            api_key=SecretStr(KEYS[label][0]),
            secret_key=SecretStr(KEYS[label][1]),
            base_url=sim.url,
        )
        for label in labels
    ]
    topics = ForwarderTopics(
        v2=env["TRADING_ORDER_FEED_TOPIC_V2"],
        v1=env["TRADING_ORDER_FEED_TOPIC"],
        reconcile=f"{env['TORGHUT_APP_ID']}-trade-updates-by-account",
    )
    forwarder = TradeUpdatesForwarder(accounts, stack.bootstrap, topics)
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    for label in labels:
        await asyncio.to_thread(sim.admin.wait_listening, label, 1, 20.0)
    try:
        yield forwarder
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
