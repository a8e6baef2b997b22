"""Order feed under a Postgres outage (issue #22, Build point 6): the batch is retried within
`TORGHUT_ORDER_FEED_RETRY_SECONDS`, never dead-lettered, never holds the group's rebalance
longer than that bound, and is applied once Postgres is back.

Worker A reaches Postgres through a TCP proxy; executions of five orders exist. The proxy then
refuses every connection (Postgres unavailable to the worker, the real server untouched) and ten
trade updates (new + fill per order) arrive. Worker B joins the group meanwhile: A's batch
cannot be applied, so A exits non-zero (`order_feed_unavailable`) without acking it once its
budget is spent, and B owns every partition within the bound (plus the group's session timeout
for A's unannounced exit). Postgres comes back and B applies the redelivered updates: every
execution filled, every event stored once, no dead letter.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from schemas.codecs import decode_dead_letter
from simulator.testing import RunningSimulator
from streams.errors import EX_SOFTWARE
from streams.persistence.repository import DecisionRow, ExecutionRow, Repository
from streams.reconciliation.service import ORDER_FEED_UNAVAILABLE
from tests.chaos.fault_support import PRICES, Sender, TcpProxy, report, sim_accounts
from tests.integration.lanes.helpers import lane_env, prepare_topics, registry, topic_values
from tests.integration.persistence.conftest import head_dsn, head_template
from tests.support.pg import fetch
from tests.support.stack import StackInfo
from tests.support.worker import Worker
from tests.unit.order_feed.helpers import data, v2

__all__ = ["head_dsn", "head_template"]

pytestmark = pytest.mark.integration

LABEL = "alpha"
ORDERS = 5
BOUND = 8.0  # TORGHUT_ORDER_FEED_RETRY_SECONDS
SESSION = 6.0  # the workers' group session timeout (tests/support/worker.py)


def owned(worker: Worker, topic: str) -> set[str]:
    try:
        status = worker.get("/trading/status", timeout=2.0).json()
    except (requests.RequestException, ValueError):
        return set()
    return {tp for tp in status["worker"]["owned_partitions"] if tp.startswith(f"{topic}:")}


async def seed(dsn: str, orders: list[tuple[str, str]]) -> None:
    repo = await Repository.connect(dsn, pool_size=1)
    try:
        for client_id, order_id in orders:
            await repo.upsert_decisions(
                [
                    DecisionRow(
                        account_label=LABEL,
                        decision_hash=client_id,
                        strategy_id="chaos-of",
                        symbol="AAPL",
                        timeframe="1Sec",
                        action="buy",
                        event_ts=datetime.now(UTC),
                        status="submitted",
                    )
                ]
            )
            await repo.upsert_execution(
                ExecutionRow(
                    account_label=LABEL,
                    client_order_id=client_id,
                    alpaca_order_id=order_id,
                    symbol="AAPL",
                    side="buy",
                    order_type="market",
                    time_in_force="day",
                    submitted_qty=Decimal(10),
                    status="accepted",
                )
            )
    finally:
        await repo.close()


def updates(orders: list[tuple[str, str]]) -> list[bytes]:
    """A `new` and a `fill` per order, as the forwarder writes them to the v2 topic."""
    out = []
    seq = 0
    for client_id, order_id in orders:
        now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        common = {"order_id": order_id, "client_order_id": client_id, "timestamp": now}
        for event in (
            data("new", qty=None, status="new", filled_qty="0", filled_avg_price=None, **common),
            data("fill", status="filled", price="100", filled_avg_price="100", **common),
        ):
            seq += 1
            out.append(json.dumps(v2(event, LABEL, seq=seq)).encode())
    return out


async def test_a_postgres_outage_never_holds_the_order_feed_past_its_bound(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    orders = [(uuid.uuid4().hex * 2, str(uuid.uuid4())) for _ in range(ORDERS)]
    await seed(head_dsn, orders)
    proxy = TcpProxy.for_dsn(head_dsn)
    with RunningSimulator(sim_accounts([LABEL])) as sim:
        sim.admin.set_prices(PRICES)
        env = lane_env("chaos-of", proxy.dsn(head_dsn), registry(sim.url, [LABEL]))
        env.update(
            TORGHUT_ORDER_FEED_RETRY_SECONDS=str(BOUND),
            TORGHUT_ORDER_FEED_BATCH_SECONDS="0.2",
        )
        await prepare_topics(stack, env)
        by_account = f"{env['TORGHUT_APP_ID']}-trade-updates-by-account"
        a = Worker(stack, env, tmp_path / "a", "a").start()
        workers.append(a)
        a.wait_ready(120)

        proxy.block()
        async with Sender(stack, env["TORGHUT_DECISIONS_TOPIC"]) as sender:
            for value in updates(orders):
                await sender.send_raw(env["TRADING_ORDER_FEED_TOPIC_V2"], LABEL.encode(), value)
        sent_at = time.monotonic()
        await asyncio.sleep(1.0)
        b = Worker(stack, env, tmp_path / "b", "b").start()
        workers.append(b)
        joined_at = time.monotonic()

        code = await asyncio.to_thread(a.wait_exit, BOUND + 60)
        a_exited = time.monotonic() - sent_at
        proxy.unblock()  # Postgres is back
        deadline = time.monotonic() + BOUND + SESSION + 60
        while len(owned(b, by_account)) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        b_owned = time.monotonic() - joined_at
        b_partitions = sorted(owned(b, by_account))

        async def applied() -> tuple[int, int]:
            rows = await fetch(
                head_dsn,
                "SELECT count(*) FILTER (WHERE status = 'filled') AS filled FROM executions "
                "WHERE alpaca_account_label = $1",
                LABEL,
            )
            events = await fetch(
                head_dsn,
                "SELECT count(*) AS n FROM execution_order_events WHERE alpaca_account_label = $1",
                LABEL,
            )
            return int(rows[0]["filled"]), int(events[0]["n"])

        applied_deadline = time.monotonic() + 90
        filled, stored = await applied()
        while (filled, stored) != (ORDERS, 2 * ORDERS) and time.monotonic() < applied_deadline:
            await asyncio.sleep(0.5)
            filled, stored = await applied()
        applied_after = time.monotonic() - sent_at
        await asyncio.sleep(2.0)  # a late duplicate would show up by now
        final = await applied()
        letters = [
            decode_dead_letter(v)
            for v in await topic_values(stack, env["TORGHUT_DLQ_TOPIC"], idle=1.0)
        ]
    proxy.close()
    reason = [line for line in a.lines if ORDER_FEED_UNAVAILABLE in line]
    report(
        "order feed bound (Postgres unavailable)",
        {
            "trade updates sent": 2 * ORDERS,
            "connections refused by the proxy": proxy.refused,
            "worker A exit code": code,
            "worker A exited after the batch arrived": f"{a_exited:.1f}s (bound {BOUND:.0f}s)",
            "reason logged": reason[-1] if reason else None,
            "worker B owned every partition after joining": f"{b_owned:.1f}s {b_partitions}",
            "applied after the outage began": f"{applied_after:.1f}s",
            "executions filled / events stored": f"{final[0]}/{ORDERS}, {final[1]}/{2 * ORDERS}",
            "dead letters": [(x.reason, x.source_topic) for x in letters],
        },
    )
    assert code == EX_SOFTWARE and reason, a.tail()
    assert "exiting unacked" in reason[-1]
    # It retried within its budget (backoff 0.2 s doubling to 5 s: the last retry that fits
    # ends within 5 s of the bound), and gave up at the bound (plus batching and the exit).
    assert BOUND - 5.0 <= a_exited <= BOUND + 10
    assert len(b_partitions) == 4
    assert b_owned <= BOUND + SESSION + 20  # never held much past the bound
    assert final == (ORDERS, 2 * ORDERS)  # applied once Postgres is back, each event once
    assert letters == []  # nothing dead-lettered for an infrastructure error
    assert proxy.refused > 0
