"""Input integrity of the order feed on the real stack, with three workers.

Three `faust -A streams.app worker` processes share the app (so the order feed's v1 partitions,
the lanes and the order-index replicas are spread over them), three simulator accounts, and a
forwarder that writes **v1 only** (no account in the events). Every stored event must land under
its own account, none under another label nor the default one. v2 records naming an unknown or
invalid account, a negative quantity or a year-9999 time end as dead letters and write nothing.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import asyncpg
import pytest
from pydantic import SecretStr

from schemas.codecs import decode_dead_letter
from simulator.testing import RunningSimulator
from streams.domain.accounts import Account, AccountMode
from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder
from tests.integration.lanes.helpers import (
    KEYS,
    decision,
    lane_env,
    prepare_topics,
    registry,
    send,
    simulator,
    wait_until,
)
from tests.integration.order_feed.kafka_read import read_topic
from tests.support.kafka import produce
from tests.support.pg import fetch
from tests.support.stack import StackInfo
from tests.support.worker import Worker
from tests.unit.order_feed.helpers import data, v2

pytestmark = pytest.mark.integration

LABELS = ("alpha", "beta", "gamma")
ORDERS_PER_ACCOUNT = 12


@dataclass
class Cluster:
    stack: StackInfo
    env: dict[str, str]
    dsn: str
    sim: RunningSimulator
    workers: list[Worker]


@pytest.fixture(scope="module")
def cluster(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from tests.integration.order_feed.test_end_to_end import _database, _drop

    db = f"integrity_{int(time.time() * 1000)}"
    with simulator(LABELS) as sim:
        dsn = asyncio.run(_database(stack, db))
        env = lane_env(
            "integ",
            dsn,
            registry(sim.url, LABELS),
            TRADING_ACCOUNT_LABEL="paper",  # the default label: must never be written
            TORGHUT_ORDER_FEED_BATCH_SECONDS="0.1",
            TORGHUT_UNATTRIBUTED_SWEEP_SECONDS="1",
            TRADING_RECONCILE_INTERVAL_SECONDS="600",  # the feed alone must attribute
        )
        asyncio.run(prepare_topics(stack, env))
        workers = [
            Worker(stack, env, tmp_path_factory.mktemp(f"w{n}"), name=f"w{n}").start()
            for n in range(3)
        ]
        try:
            for worker in workers:
                worker.wait_ready(timeout=150)
            yield Cluster(stack, env, dsn, sim, workers)
        finally:
            for worker in workers:
                worker.stop()
            asyncio.run(_drop(stack, db))


@pytest.fixture
async def v1_forwarder(cluster: Cluster) -> AsyncIterator[TradeUpdatesForwarder]:
    accounts = [
        Account(
            label=label,
            mode=AccountMode.paper,
            api_key=SecretStr(KEYS[label][0]),
            secret_key=SecretStr(KEYS[label][1]),
            base_url=cluster.sim.url,
        )
        for label in LABELS
    ]
    topics = ForwarderTopics(v2=None, v1=cluster.env["TRADING_ORDER_FEED_TOPIC"], reconcile=None)
    forwarder = TradeUpdatesForwarder(accounts, cluster.stack.bootstrap, topics)
    stop = asyncio.Event()
    task = asyncio.create_task(forwarder.run(stop))
    for label in LABELS:
        await asyncio.to_thread(cluster.sim.admin.wait_listening, label, 1, 20.0)
    yield forwarder
    stop.set()
    await asyncio.wait_for(task, 15)


async def test_v1_only_updates_under_load_land_under_their_own_account(
    cluster: Cluster, v1_forwarder: TradeUpdatesForwarder
) -> None:
    decisions = [
        decision(label, symbol, notional="1000")
        for n in range(ORDERS_PER_ACCOUNT)
        for label in LABELS
        for symbol in (("AAPL", "MSFT")[n % 2],)
    ]
    owner = {d.decision_hash: d.account_label for d in decisions}
    await send(cluster.stack, cluster.env, *decisions)

    def streamed() -> dict[str, int]:
        """Events the simulator streamed per client order id (the forwarder wrote them v1)."""
        by_order: dict[str, int] = {}
        for label in LABELS:
            orders = {o["id"]: o["client_order_id"] for o in cluster.sim.admin.orders(label)}
            for e in cluster.sim.admin.events(label):
                cid = orders.get(e["order_id"])
                if cid in owner:
                    by_order[cid] = by_order.get(cid, 0) + 1
        return by_order

    async def all_stored() -> list[asyncpg.Record] | None:
        expected = await asyncio.to_thread(streamed)
        rows = await fetch(
            cluster.dsn,
            "SELECT client_order_id, alpaca_account_label, execution_id "
            "FROM execution_order_events WHERE client_order_id = ANY($1::text[])",
            list(owner),
        )
        got: dict[str, int] = {}
        for r in rows:
            got[r["client_order_id"]] = got.get(r["client_order_id"], 0) + 1
        complete = len(expected) == len(owner) and got == expected
        unlinked = sum(r["execution_id"] is None for r in rows)
        missing = {c: (n, got.get(c, 0)) for c, n in expected.items() if got.get(c, 0) != n}
        last[:] = [len(expected), len(rows), unlinked, missing]
        return rows if complete and not unlinked else None

    last: list[object] = []
    try:
        rows = await wait_until(all_stored, 60, "every streamed event stored and linked")
    except AssertionError:
        held_rows = await fetch(
            cluster.dsn, "SELECT client_order_id FROM unattributed_order_events"
        )
        per = await fetch(
            cluster.dsn,
            "SELECT alpaca_account_label AS a, status AS s, count(*) AS n FROM trade_decisions "
            "GROUP BY 1, 2",
        )
        decided = [(r["a"], r["s"], r["n"]) for r in per]
        raise AssertionError(
            f"orders, rows, unlinked, missing: {last}; held: {len(held_rows)}; {decided}"
        ) from None
    wrong = [r for r in rows if r["alpaca_account_label"] != owner[r["client_order_id"]]]
    assert wrong == []
    labels = await fetch(
        cluster.dsn, "SELECT DISTINCT alpaca_account_label AS l FROM execution_order_events"
    )
    assert {r["l"] for r in labels} <= set(LABELS)  # nothing under `paper` or another label
    assert await fetch(cluster.dsn, "SELECT 1 FROM unattributed_order_events") == []
    filled = await fetch(
        cluster.dsn,
        "SELECT count(*) AS n FROM executions WHERE status = 'filled' "
        "AND client_order_id = ANY($1::text[])",
        list(owner),
    )
    assert filled[0]["n"] == len(owner)
    # How the order feed found the accounts (informative: depends on timing).
    held = sum(_metric(w, "torghut_order_feed_unattributed_total") for w in cluster.workers)
    resolved = sum(
        _metric(w, "torghut_order_feed_unattributed_resolved_total") for w in cluster.workers
    )
    print(f"{len(rows)} events of {len(owner)} orders; held {held:.0f}, resolved {resolved:.0f}")


def _metric(worker: Worker, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = worker.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    )


async def test_unknown_invalid_negative_and_future_v2_updates_are_dead_letters(
    cluster: Cluster,
) -> None:
    cids = {reason: f"{n:x}".rjust(64, "e") for n, reason in enumerate(range(4))}
    ghost = v2(data(client_order_id=cids[0]), "ho-ghost")
    invalid = v2(data(client_order_id=cids[1]), "HO ALPHA!")
    negative = v2(data(client_order_id=cids[2], qty="-5"), "alpha")
    future = v2(data(client_order_id=cids[3], timestamp="9999-12-31T23:59:59.000000Z"), "alpha")
    await produce(
        cluster.stack.bootstrap,
        cluster.env["TRADING_ORDER_FEED_TOPIC_V2"],
        [(b"AAPL", json.dumps(e).encode()) for e in (ghost, invalid, negative, future)],
    )
    letters = await read_topic(cluster.stack.bootstrap, cluster.env["TORGHUT_DLQ_TOPIC"], expect=4)
    by_offset = {
        d.source_offset: d
        for d in (decode_dead_letter(r.value) for r in letters)
        if d.source_topic == cluster.env["TRADING_ORDER_FEED_TOPIC_V2"]
    }
    got = sorted((d.reason, (d.error or "").split(":")[1].strip()) for d in by_offset.values())
    assert got == [
        ("event_time_in_future", "payload.timestamp"),
        ("invalid_number", "payload.qty"),
        ("unknown_account", "payload.account_label"),
        ("unknown_account", "payload.account_label"),
    ]
    await asyncio.sleep(2.0)  # nothing is written late either
    for table in ("execution_order_events", "unattributed_order_events"):
        rows = await fetch(
            cluster.dsn,
            f"SELECT 1 FROM {table} WHERE client_order_id = ANY($1::text[])",
            list(cids.values()),
        )
        assert rows == [], table
    labels = await fetch(cluster.dsn, "SELECT DISTINCT alpaca_account_label FROM executions")
    assert {r["alpaca_account_label"] for r in labels} <= set(LABELS)
