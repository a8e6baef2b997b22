"""End to end: decisions → lanes → simulator → forwarder (v1 + v2) → order feed → Postgres.

One real worker (`faust -A streams.app worker`) for the module, real Kafka and Postgres, the
simulator over HTTP and websockets, the forwarder in the test's event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.codecs import decode_dead_letter, encode_decision
from schemas.decision import AccountDecision, Action
from simulator.testing import RunningSimulator
from streams.domain.accounts import Account, AccountMode
from streams.domain.hashing import decision_hash
from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder
from streams.persistence import migrate
from tests.integration.order_feed.kafka_read import read_topic
from tests.support.kafka import create_topics, produce
from tests.support.stack import StackInfo, app_env, app_topics, unique
from tests.support.worker import Worker
from tests.unit.order_feed.helpers import data, v1

pytestmark = pytest.mark.integration

LABELS = ("acct-a", "acct-b")
SIM_ACCOUNTS = [{"label": x, "key": f"K-{x}", "secret": f"S-{x}"} for x in LABELS]
RECONCILE_INTERVAL = 3.0
PRICES = {"AAPL": Decimal("190.00"), "MSFT": Decimal("420.00")}  # the simulator's defaults


@dataclass
class Stack:
    stack: StackInfo
    env: dict[str, str]
    dsn: str
    sim: RunningSimulator
    worker: Worker

    @property
    def reconcile_topic(self) -> str:
        return f"{self.env['TORGHUT_APP_ID']}-trade-updates-by-account"


def _registry(sim: RunningSimulator) -> str:
    return json.dumps(
        [
            {
                "label": a["label"],
                "mode": "paper",
                "api_key": a["key"],
                "secret_key": a["secret"],
                "base_url": sim.url,
            }
            for a in SIM_ACCOUNTS
        ]
    )


async def _database(stack: StackInfo, name: str) -> str:
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    dsn = stack.database(name)
    await migrate.upgrade(dsn, "head", default_account_label="paper")
    return dsn


async def _drop(stack: StackInfo, name: str) -> None:
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="module")
def e2e(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    db = unique("of").replace("-", "_")
    with RunningSimulator({"accounts": SIM_ACCOUNTS}, seed=11, partial_fill_prob=0.6) as sim:
        dsn = asyncio.run(_database(stack, db))
        env = app_env(
            "of",
            DATABASE_URL=dsn,
            TRADING_MULTI_ACCOUNT_ENABLED="true",
            TRADING_ACCOUNTS_JSON=_registry(sim),
            TRADING_ACCOUNT_LABEL="paper",
            TRADING_RECONCILE_INTERVAL_SECONDS=str(RECONCILE_INTERVAL),
            TRADING_RECONCILE_PENDING_AFTER_SECONDS="2",
            TORGHUT_ORDER_FEED_BATCH_SECONDS="0.1",
        )
        asyncio.run(create_topics(stack.bootstrap, app_topics(env), partitions=4))
        worker = Worker(stack, env, tmp_path_factory.mktemp("of-worker")).start()
        try:
            worker.wait_ready(120)
            yield Stack(stack, env, dsn, sim, worker)
        finally:
            worker.stop()
            asyncio.run(_drop(stack, db))


@pytest.fixture
async def forwarder(e2e: Stack) -> AsyncIterator[TradeUpdatesForwarder]:
    accounts = [
        Account(
            label=a["label"],
            mode=AccountMode.paper,
            api_key=SecretStr(a["key"]),
            secret_key=SecretStr(a["secret"]),
            base_url=e2e.sim.url,
        )
        for a in SIM_ACCOUNTS
    ]
    topics = ForwarderTopics(
        v2=e2e.env["TRADING_ORDER_FEED_TOPIC_V2"],
        v1=e2e.env["TRADING_ORDER_FEED_TOPIC"],
        reconcile=e2e.reconcile_topic,
    )
    fwd = TradeUpdatesForwarder(accounts, e2e.stack.bootstrap, topics)
    stop = asyncio.Event()
    task = asyncio.create_task(fwd.run(stop))
    for label in LABELS:
        await asyncio.to_thread(e2e.sim.admin.wait_listening, label, 1, 20.0)
    yield fwd
    stop.set()
    await asyncio.wait_for(task, 15)


_event_ms = itertools.count()


def decision(label: str, symbol: str, notional: str) -> AccountDecision:
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "account_label": label,
        "symbol": symbol,
        "timeframe": "1Sec",
        # A distinct event time per decision: the identity (and hash) has no strategy in it.
        "event_ts": now + timedelta(milliseconds=next(_event_ms)),
        "action": "buy",
    }
    return AccountDecision(
        decision_hash=decision_hash(**fields),
        strategy_id=f"e2e-{unique('s')}",
        notional=Decimal(notional),
        price=PRICES[symbol],
        confidence=0.9,
        emitted_at=now,
        **{**fields, "action": Action.buy},
    )


async def send_decisions(e2e: Stack, decisions: list[AccountDecision]) -> None:
    await produce(
        e2e.stack.bootstrap,
        e2e.env["TORGHUT_DECISIONS_TOPIC"],
        [(d.account_label.encode(), encode_decision(d)) for d in decisions],
    )


async def query(e2e: Stack, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(e2e.dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout: float, what: str, worker: Worker
) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.25)
    noise = ("Updating subscribed", "|", "〃", "+-")
    lines = [x for x in worker.lines if not x.startswith(noise) and "subscribed topics" not in x]
    tail = "\n".join(lines[-60:])
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})\n{tail}")


async def executions(e2e: Stack, hashes: list[str]) -> dict[str, asyncpg.Record]:
    rows = await query(
        e2e,
        "SELECT e.*, d.status AS decision_status FROM executions e "
        "JOIN trade_decisions d ON d.id = e.trade_decision_id "
        "WHERE e.client_order_id = ANY($1::text[])",
        hashes,
    )
    return {r["client_order_id"]: r for r in rows}


async def all_filled(e2e: Stack, hashes: list[str]) -> dict[str, asyncpg.Record] | None:
    rows = await executions(e2e, hashes)
    done = len(rows) == len(hashes) and all(
        r["status"] == "filled" and r["decision_status"] == "filled" for r in rows.values()
    )
    return rows if done else None


def broker_orders(e2e: Stack, label: str) -> dict[str, dict[str, Any]]:
    return {o["client_order_id"]: o for o in e2e.sim.admin.orders(label)}


async def event_counts(e2e: Stack, hashes: list[str]) -> dict[str, int]:
    rows = await query(
        e2e,
        "SELECT client_order_id, count(*) AS n FROM execution_order_events "
        "WHERE client_order_id = ANY($1::text[]) GROUP BY client_order_id",
        hashes,
    )
    return {r["client_order_id"]: r["n"] for r in rows}


async def streamed_counts(e2e: Stack, hashes: list[str]) -> dict[str, int]:
    """`event_counts` of events that came through the stream (not replayed broker fills: a
    reconcile request, e.g. the forwarder's connect, replays an account's fills)."""
    rows = await query(
        e2e,
        "SELECT client_order_id, count(*) AS n FROM execution_order_events "
        "WHERE client_order_id = ANY($1::text[]) AND source_topic <> 'broker:activities/FILL' "
        "GROUP BY client_order_id",
        hashes,
    )
    return {r["client_order_id"]: r["n"] for r in rows}


def stream_events(e2e: Stack, label: str, order_id: str) -> list[dict[str, Any]]:
    return [e for e in e2e.sim.admin.events(label) if e["order_id"] == order_id]


async def assert_stored_once(e2e: Stack, label: str, client_order_id: str, order_id: str) -> int:
    """Every event the stream delivered for the order is stored, exactly once (then settles)."""
    events = await asyncio.to_thread(stream_events, e2e, label, order_id)

    async def complete() -> bool:
        counts = await event_counts(e2e, [client_order_id])
        return counts.get(client_order_id) == len(events)

    await eventually(complete, 30, f"{len(events)} events of {label} stored", e2e.worker)
    await asyncio.sleep(1.0)  # late copies (v1 after v2, duplicates) must not add rows
    assert (await event_counts(e2e, [client_order_id]))[client_order_id] == len(events)
    return len(events)


async def test_lane_orders_fill_through_the_forwarder_into_executions(
    e2e: Stack, forwarder: TradeUpdatesForwarder
) -> None:
    decisions = [
        decision("acct-a", "AAPL", "1900"),
        decision("acct-a", "MSFT", "4200"),
        decision("acct-b", "AAPL", "3800"),
    ]
    await send_decisions(e2e, decisions)
    hashes = [d.decision_hash for d in decisions]
    rows = await eventually(lambda: all_filled(e2e, hashes), 60, "all filled", e2e.worker)
    for d in decisions:
        order = broker_orders(e2e, d.account_label)[d.decision_hash]
        row = rows[d.decision_hash]
        assert row["alpaca_account_label"] == d.account_label
        assert row["filled_qty"] == Decimal(order["filled_qty"]) == row["submitted_qty"]
        assert row["avg_fill_price"] == Decimal(order["filled_avg_price"])
    # Every stream event stored exactly once, although each travelled as v1 and v2.
    partial = 0
    for d in decisions:
        order_id = rows[d.decision_hash]["alpaca_order_id"]
        assert await assert_stored_once(e2e, d.account_label, d.decision_hash, order_id) >= 2
        events = await asyncio.to_thread(stream_events, e2e, d.account_label, order_id)
        partial += sum(e["event"] == "partial_fill" for e in events)
    assert partial >= 1  # the average price was built from several executions


async def test_dropped_duplicated_and_reordered_events(
    e2e: Stack, forwarder: TradeUpdatesForwarder
) -> None:
    admin = e2e.sim.admin
    # acct-a loses every event of its next order; acct-b gets each event twice.
    await asyncio.to_thread(admin.set_faults, "acct-a", {"drop_next_events": 20})
    await asyncio.to_thread(admin.set_faults, "acct-b", {"duplicate_events": True})
    try:
        dropped, doubled = decision("acct-a", "AAPL", "950"), decision("acct-b", "MSFT", "2100")
        await send_decisions(e2e, [dropped, doubled])
        rows = await eventually(
            lambda: all_filled(e2e, [doubled.decision_hash]), 60, "doubled filled", e2e.worker
        )
        order_id = rows[doubled.decision_hash]["alpaca_order_id"]
        events = await asyncio.to_thread(stream_events, e2e, "acct-b", order_id)
        assert events and all(e["copies"] == 2 for e in events)
        await assert_stored_once(e2e, "acct-b", doubled.decision_hash, order_id)

        filled_at = await eventually(
            lambda: _broker_filled(e2e, "acct-a", dropped.decision_hash), 30, "broker", e2e.worker
        )
        assert filled_at
        # Fixed by the reconciler within one interval (+ slack for the REST calls and polling).
        started = time.monotonic()
        await eventually(
            lambda: all_filled(e2e, [dropped.decision_hash]),
            RECONCILE_INTERVAL + 3,
            "reconciled",
            e2e.worker,
        )
        print(f"dropped fill repaired {time.monotonic() - started:.2f}s after the broker fill")
        assert await streamed_counts(e2e, [dropped.decision_hash]) == {}  # nothing streamed

        await asyncio.to_thread(admin.clear_faults, "acct-a")
        await asyncio.to_thread(admin.set_faults, "acct-a", {"reorder_events": True})
        reordered = [decision("acct-a", "AAPL", "1900"), decision("acct-a", "MSFT", "2100")]
        await send_decisions(e2e, reordered)
        hashes = [d.decision_hash for d in reordered]
        rows = await eventually(lambda: all_filled(e2e, hashes), 60, "reordered", e2e.worker)
        orders = broker_orders(e2e, "acct-a")
        for h in hashes:
            assert rows[h]["filled_qty"] == Decimal(orders[h]["filled_qty"])
    finally:
        for label in LABELS:
            await asyncio.to_thread(admin.clear_faults, label)


async def _broker_filled(e2e: Stack, label: str, client_order_id: str) -> bool:
    orders = await asyncio.to_thread(broker_orders, e2e, label)
    order = orders.get(client_order_id)
    return order is not None and order["status"] == "filled"


async def test_unowned_v1_event_is_held_not_defaulted_and_missing_identity(
    e2e: Stack, forwarder: TradeUpdatesForwarder
) -> None:
    d = decision("acct-b", "AAPL", "1900")
    await send_decisions(e2e, [d])
    rows = await eventually(lambda: all_filled(e2e, [d.decision_hash]), 60, "filled", e2e.worker)
    before = rows[d.decision_hash]
    # A v1 event with an unknown client id and acct-b's order id: no account owns it (the
    # Alpaca id is no evidence when the client id is unknown), so in multi-account mode it is
    # held under no account, never stored under the default label.
    foreign = data(
        "canceled",
        qty=None,
        order_id=before["alpaca_order_id"],
        client_order_id="f" * 64,
        status="canceled",
        filled_qty="0",
    )
    nameless = data(order_id=None, client_order_id=None)
    await produce(
        e2e.stack.bootstrap,
        e2e.env["TRADING_ORDER_FEED_TOPIC"],
        [(b"AAPL", json.dumps(v1(foreign)).encode()), (b"AAPL", json.dumps(v1(nameless)).encode())],
    )

    async def held() -> list[asyncpg.Record]:
        return await query(
            e2e,
            "SELECT source_topic FROM unattributed_order_events WHERE client_order_id = $1",
            "f" * 64,
        )

    assert [r["source_topic"] for r in await eventually(held, 30, "held", e2e.worker)] == [
        e2e.env["TRADING_ORDER_FEED_TOPIC"]
    ]
    stored = await query(
        e2e, "SELECT 1 FROM execution_order_events WHERE client_order_id = $1", "f" * 64
    )
    assert stored == []
    after = (await executions(e2e, [d.decision_hash]))[d.decision_hash]
    assert (after["status"], after["filled_qty"]) == (before["status"], before["filled_qty"])

    letters = await read_topic(e2e.stack.bootstrap, e2e.env["TORGHUT_DLQ_TOPIC"], expect=1)
    reasons = [decode_dead_letter(r.value).reason for r in letters]
    assert "missing_order_identity" in reasons

    async def gauge() -> bool:  # set by the leader's sweep (every 5 s)
        got = await asyncio.to_thread(samples, e2e.worker)
        return got.get(("torghut_order_feed_unattributed_held", ()), 0.0) >= 1

    await eventually(gauge, 15, "held gauge", e2e.worker)
    got = await asyncio.to_thread(samples, e2e.worker)
    assert got[("torghut_order_feed_unattributed_total", ())] >= 1
    dropped = ("torghut_order_feed_dropped_total", (("reason", "missing_order_identity"),))
    assert got[dropped] >= 1


def samples(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = worker.get("/metrics").text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_per_account_counters(e2e: Stack, forwarder: TradeUpdatesForwarder) -> None:
    d = decision("acct-a", "MSFT", "2100")
    await send_decisions(e2e, [d])
    await eventually(lambda: all_filled(e2e, [d.decision_hash]), 60, "filled", e2e.worker)
    got = await asyncio.to_thread(samples, e2e.worker)

    def value(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    for label in LABELS:
        assert value("torghut_order_feed_events_total", account=label, event="fill") >= 1
        assert value("torghut_order_feed_applied_total", account=label) >= 1
        # Every event arrives twice (v1 + v2): one of each pair is a duplicate.
        assert value("torghut_order_feed_duplicates_total", account=label) >= 1
    assert value("torghut_order_feed_events_total", account="acct-a", event="new") >= 1
    assert value("torghut_reconciler_runs_total", account="acct-a", outcome="ok") >= 1


async def test_fills_replayed_after_dropped_events_and_a_reconnect(
    e2e: Stack, forwarder: TradeUpdatesForwarder
) -> None:
    """acct-a's stream drops every event of an order; the forwarder's reconnect asks for a
    reconcile, and the worker replays acct-a's fill activities after its cursor through the
    order-feed apply: each broker execution stored once, nothing under acct-b."""
    admin = e2e.sim.admin
    await asyncio.to_thread(admin.set_faults, "acct-a", {"drop_next_events": 50})
    try:
        d = decision("acct-a", "MSFT", "4200")
        await send_decisions(e2e, [d])
        assert await eventually(
            lambda: _broker_filled(e2e, "acct-a", d.decision_hash), 30, "broker", e2e.worker
        )
    finally:
        await asyncio.to_thread(admin.clear_faults, "acct-a")
    order = broker_orders(e2e, "acct-a")[d.decision_hash]
    client = e2e.sim.trading_client("acct-a")
    fills = [
        f
        for f in await asyncio.to_thread(
            client.get, "/account/activities/FILL", {"direction": "asc", "page_size": 100}
        )
        if f["order_id"] == order["id"]
    ]
    assert fills and await streamed_counts(e2e, [d.decision_hash]) == {}  # nothing streamed
    runs = (
        "torghut_fill_replay_runs_total",
        (("account", "acct-a"), ("outcome", "ok"), ("trigger", "reconcile_request")),
    )
    before = -1.0
    for _ in range(10):  # the replay the forwarder's first connect asked for has settled
        now = (await asyncio.to_thread(samples, e2e.worker)).get(runs, 0.0)
        if now == before:
            break
        before = now
        await asyncio.sleep(1.0)

    async def replayed() -> list[asyncpg.Record] | None:
        rows = await query(
            e2e,
            "SELECT alpaca_account_label, execution_id_alpaca, source_topic "
            "FROM execution_order_events WHERE alpaca_order_id = $1",
            order["id"],
        )
        return rows if len(rows) >= len(fills) else None

    await asyncio.to_thread(admin.disconnect, "acct-a")  # the forwarder reconnects
    rows = await eventually(replayed, 30, "fills replayed", e2e.worker)
    await asyncio.to_thread(admin.disconnect, "acct-a")  # again: nothing new to replay
    await asyncio.sleep(2.0)
    rows = await query(
        e2e,
        "SELECT alpaca_account_label, execution_id_alpaca, source_topic "
        "FROM execution_order_events WHERE alpaca_order_id = $1",
        order["id"],
    )
    assert sorted(r["execution_id_alpaca"] for r in rows) == sorted(
        f["execution_id"] for f in fills
    )  # exactly one stored fill per broker execution id
    assert {(r["alpaca_account_label"], r["source_topic"]) for r in rows} == {
        ("acct-a", "broker:activities/FILL")
    }
    filled = await eventually(lambda: all_filled(e2e, [d.decision_hash]), 15, "filled", e2e.worker)
    row = filled[d.decision_hash]
    assert row["filled_qty"] == Decimal(order["filled_qty"]) == row["submitted_qty"]  # no over-fill

    async def replay_counted() -> dict[Any, float] | None:
        # The reconnect's reconcile request replays fills; its run is counted when it ends,
        # which may come after the rows are stored (a replay already under way answered first).
        got: dict[Any, float] = await asyncio.to_thread(samples, e2e.worker)
        return got if got.get(runs, 0.0) > before else None

    got = await eventually(replay_counted, 30, "replay run counted", e2e.worker)
    refused = [k for k in got if k[0] == "torghut_order_fill_refused_total"]
    assert all(got[k] == 0 for k in refused)
