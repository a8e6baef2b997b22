"""Execution lanes end to end: one real worker, real Kafka and Postgres, the simulator through
alpaca-py, a Flipt-protocol flag server. The tests share the worker and run in file order; each
uses its own decisions, and each fault or switch it sets is released before it ends.

Accounts: alpha and beta trade at the simulator; gamma has keys the simulator does not know.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest

from schemas.codecs import encode_control
from schemas.control import ControlCommand, control_key
from streams.domain.hashing import decision_hash
from tests.integration.lanes.helpers import World as LaneWorld
from tests.integration.lanes.helpers import (
    ack_latencies_ms,
    broker_orders,
    decision,
    decision_row,
    executions,
    lane_env,
    prepare_topics,
    reasons,
    registry,
    send,
    simulator,
    start_worker,
    wait_executed,
    wait_status,
    wait_until,
)
from tests.integration.persistence.conftest import _create, _drop
from tests.support.flipt import FakeFlipt
from tests.support.kafka import produce
from tests.support.pg import fetch
from tests.support.stack import StackInfo, unique

pytestmark = pytest.mark.integration

KILL_FLAG = "torghut_trading_kill_switch"


@dataclass
class World(LaneWorld):
    """The lanes world with a feature-flag server."""

    flipt: FakeFlipt


@pytest.fixture(scope="module")
def world(
    stack: StackInfo, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    name = unique("lanes").replace("-", "_")
    dsn = asyncio.run(_create(stack, name, template=head_template))
    sim = simulator(["alpha", "beta"])
    flipt = FakeFlipt().start()
    env = lane_env(
        "lanes",
        dsn,
        registry(sim.url, ["alpha", "beta"], bad=["gamma"]),
        TRADING_FLAGS_BACKEND="flipt",
        FLIPT_URL=flipt.url,
        TRADING_SNAPSHOT_INTERVAL_SECONDS="2",
    )
    asyncio.run(prepare_topics(stack, env))
    data_dir = tmp_path_factory.mktemp("lanes")
    worker = start_worker(stack, env, data_dir, "lanes")
    try:
        yield World(stack, env, dsn, sim, worker, flipt)
    finally:
        worker.stop()
        (data_dir / "worker.log").write_text(worker.output)  # for a failure's post-mortem
        flipt.close()
        sim.stop()
        asyncio.run(_drop(stack, name))


async def wait_lane(world: World, label: str, key: str, value: Any) -> None:
    async def check() -> bool:
        return bool(world.lane(label)[key] == value)

    await wait_until(check, 20, f"{label} status {key}={value}")


async def test_each_account_gets_its_own_orders_and_redelivery_submits_once(world: World) -> None:
    a, b = decision("alpha"), decision("beta", "MSFT")
    crypto = decision("beta", "BTC/USD", notional="500")
    await send(world.stack, world.env, a, b, crypto, a, b)  # a and b delivered twice

    for d in (a, b, crypto):
        rows = await wait_executed(world.dsn, d)
        assert [r["alpaca_account_label"] for r in rows] == [d.account_label]
        assert len(broker_orders(world.sim, d)) == 1
    assert await wait_status(world.dsn, a, "submitted")
    # Nothing of one account at the other: alpha's simulator account has only alpha's order.
    alpha_ids = {o["client_order_id"] for o in world.sim.admin.orders("alpha")}
    assert a.decision_hash in alpha_ids and b.decision_hash not in alpha_ids
    order = broker_orders(world.sim, crypto)[0]
    assert (order["symbol"], order["time_in_force"], order["qty"]) == ("BTC/USD", "gtc", "0.01")
    assert broker_orders(world.sim, a)[0]["qty"] == "10"  # $1000 at $100, whole shares


async def test_order_already_at_the_broker_is_linked_not_rejected(world: World) -> None:
    """The broker answers 422 (duplicate client order id): fetch the order and link it."""
    d = decision("alpha")
    world.sim.trading_client("alpha").submit_order(
        MarketOrderRequest(
            symbol="AAPL",
            qty=10,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            client_order_id=d.decision_hash,
        )
    )
    await send(world.stack, world.env, d)
    rows = await wait_executed(world.dsn, d)
    assert len(rows) == 1 and rows[0]["alpaca_order_id"] == broker_orders(world.sim, d)[0]["id"]
    assert len(broker_orders(world.sim, d)) == 1
    row = await decision_row(world.dsn, d)
    assert row is not None and row["status"] != "rejected"
    assert "order already existed at the broker" in world.worker.output


@pytest.mark.parametrize(
    "faults",
    [
        {"post_504_after_accept": 1},  # accepted, then 504: the lookup finds it
        {"http_5xx": 1, "methods": ["POST"]},  # refused with 500: lookup, then one submit
        {"hang_next": 1, "methods": ["POST"], "hang_seconds": 10},  # no answer: same
    ],
    ids=["504-after-accept", "5xx", "hang"],
)
async def test_ambiguous_outcomes_end_in_exactly_one_order(
    world: World, faults: dict[str, Any]
) -> None:
    world.sim.admin.set_faults("alpha", faults)
    try:
        hit, other = decision("alpha"), decision("beta", "MSFT")
        await send(world.stack, world.env, hit, other)
        await wait_executed(world.dsn, other)  # beta is not held by alpha's trouble
        rows = await wait_executed(world.dsn, hit)
        assert len(rows) == 1
        assert len(broker_orders(world.sim, hit)) == 1
        await asyncio.sleep(1.5)  # a late duplicate submit would show up by now
        assert len(broker_orders(world.sim, hit)) == 1
        assert len(await executions(world.dsn, hit)) == 1
    finally:
        world.sim.admin.clear_faults("alpha")


async def test_bad_credentials_stop_only_their_own_lane(world: World) -> None:
    g1, g2 = decision("gamma"), decision("gamma")
    a = decision("alpha")
    await send(world.stack, world.env, g1, g2, a)
    for d in (g1, g2):
        row = await wait_status(world.dsn, d, "rejected")
        assert reasons(row) == ["broker_unauthorized"]
    await wait_executed(world.dsn, a)
    gamma = world.lane("gamma")
    assert gamma["up"] is False and gamma["last_error"]["kind"] == "auth"
    assert "AK-WRONG" not in world.worker.get("/trading/status").text
    alpha = world.lane("alpha")
    assert alpha["up"] is True and alpha["healthy"] is True


async def test_kill_switch_by_control_topic(world: World) -> None:
    world.cli("kill-switch", "--account", "alpha", "--on", "--reason", "drill")
    try:
        await wait_lane(
            world, "alpha", "kill_switch", {"engaged": True, "reason": "control (alpha): drill"}
        )
        a, b = decision("alpha"), decision("beta", "MSFT")
        await send(world.stack, world.env, a, b)
        row = await wait_status(world.dsn, a, "rejected")
        assert reasons(row) == ["kill_switch_enabled"]
        await wait_executed(world.dsn, b)
        assert broker_orders(world.sim, a) == []
    finally:
        release = ControlCommand(account="alpha", engaged=False, operator="test", reason="done")
        await produce(
            world.stack.bootstrap,
            world.env["TORGHUT_CONTROL_TOPIC"],
            [(control_key(release), encode_control(release))],
        )
    after = decision("alpha")
    await wait_lane(world, "alpha", "kill_switch", {"engaged": False, "reason": None})
    await send(world.stack, world.env, after)
    await wait_executed(world.dsn, after)


async def test_kill_switch_by_flag(world: World) -> None:
    world.flipt.set_flag(KILL_FLAG, True, entity="torghut:beta")
    try:
        await wait_lane(
            world, "beta", "kill_switch", {"engaged": True, "reason": f"flag {KILL_FLAG}"}
        )
        a, b = decision("alpha"), decision("beta", "MSFT")
        await send(world.stack, world.env, b, a)
        row = await wait_status(world.dsn, b, "rejected")
        assert reasons(row) == ["kill_switch_enabled"]
        await wait_executed(world.dsn, a)
        assert broker_orders(world.sim, b) == []
    finally:
        world.flipt.delete_flag(KILL_FLAG)
    await wait_lane(world, "beta", "kill_switch", {"engaged": False, "reason": None})


async def test_flag_service_down_fails_safe(world: World) -> None:
    world.flipt.down = True
    try:
        await wait_lane(world, "alpha", "flags_available", False)
        a = decision("alpha")
        await send(world.stack, world.env, a)
        row = await wait_status(world.dsn, a, "rejected")
        assert reasons(row) == ["flags_unavailable"]
        assert broker_orders(world.sim, a) == []
        assert (
            "flags_unavailable" in world.worker.get("/trading/health").json()["problems"]["alpha"]
        )
    finally:
        world.flipt.down = False
    await wait_lane(world, "alpha", "flags_available", True)


async def test_stale_decision_is_rejected(world: World) -> None:
    from datetime import timedelta

    stale = decision("alpha", age=timedelta(seconds=600))
    await send(world.stack, world.env, stale)
    row = await wait_status(world.dsn, stale, "rejected")
    assert reasons(row) == ["decision_stale"]
    assert broker_orders(world.sim, stale) == []


async def test_cursors_and_snapshots_reach_postgres(world: World) -> None:
    async def cursors() -> set[str] | None:
        rows = await fetch(
            world.dsn, "SELECT account_label FROM trade_cursor WHERE source = 'kafka'"
        )
        labels = {r["account_label"] for r in rows}
        return labels if {"alpha", "beta"} <= labels else None

    async def snapshots() -> int | None:
        rows = await fetch(
            world.dsn,
            "SELECT count(*) AS n FROM position_snapshots WHERE alpaca_account_label = 'alpha'",
        )
        return int(rows[0]["n"]) if rows[0]["n"] >= 2 else None  # the timer refreshes too

    assert await wait_until(cursors, 20, "trade_cursor rows of both lanes")
    assert await wait_until(snapshots, 20, "position snapshots")


def test_consume_to_ack_latency(world: World) -> None:
    latencies = ack_latencies_ms(world.worker)
    assert latencies, "no order acknowledged"
    quick = sorted(latencies)
    p50 = statistics.median(quick)
    print(
        f"\nconsume→ack over {len(quick)} orders: p50 {p50:.1f} ms, "
        f"min {quick[0]:.1f} ms, max {quick[-1]:.1f} ms (max includes fault retries)"
    )
    assert p50 < 1000


async def test_a_signal_re_evaluated_with_another_winner_gives_one_order(world: World) -> None:
    """Issue 16: the winning strategy depends on runtime state (circuit breakers, the legacy
    fallback). The same signal re-evaluated on another worker must not make a second order."""
    first = decision("alpha", "MSFT")
    fallback = first.model_copy(
        update={"strategy_id": "legacy-macd-rsi", "source_strategy_ids": ()}
    )
    assert fallback.decision_hash == first.decision_hash  # the same decision
    opposite = decision("alpha", "MSFT", action="sell")
    opposite = opposite.model_copy(
        update={
            "event_ts": first.event_ts,
            "decision_hash": decision_hash(
                account_label="alpha",
                symbol="MSFT",
                timeframe="1Sec",
                event_ts=first.event_ts,
                action="sell",
            ),
        }
    )
    await send(world.stack, world.env, first, fallback, opposite)
    await wait_executed(world.dsn, first)
    row = await wait_status(world.dsn, opposite, "rejected")
    assert reasons(row) == ["duplicate_signal_decision"]
    assert len(broker_orders(world.sim, first)) == 1
    assert broker_orders(world.sim, opposite) == []
