"""Trading states, kill-switch modes and pre-trade controls (issue #17) end to end: one real
worker, real Kafka and Postgres, the simulator through alpaca-py. Tests run in file order and
share the worker; each releases what it engages.

Accounts: alpha is the one acted on; beta must keep trading and keep its orders and positions
through everything done to alpha; gamma takes the daily notional cap, delta the throttle latch;
epsilon has limits of its own in the registry (a smaller order quantity and daily cap, a long
duplicate-intent window), which also hold across a worker restart.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from schemas.control import ControlCommand, TradingState
from schemas.control import trading_state_command as state_command
from simulator.testing import RunningSimulator
from tests.integration.lanes.helpers import (
    World,
    broker_orders,
    decision,
    reasons,
    running_world,
    send,
    start_worker,
    wait_executed,
    wait_status,
    wait_until,
)
from tests.support.kafka import produce
from tests.support.pg import fetch
from tests.support.stack import StackInfo, unique

pytestmark = pytest.mark.integration

LABELS = ["alpha", "beta", "gamma", "delta", "epsilon"]
FILL_DELAY_MS = 400
# epsilon's registry entry overrides the settings below (max qty 100, daily cap 30000, 3 s).
EPSILON_LIMITS = {"max_order_qty": 5, "daily_notional_cap": 1500, "duplicate_intent_seconds": 600}


@pytest.fixture(scope="module")
def world(
    stack: StackInfo, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with running_world(
        stack,
        head_template,
        tmp_path_factory,
        "risk",
        LABELS,
        limits={"epsilon": EPSILON_LIMITS},
        fill_delay_ms=FILL_DELAY_MS,
        TRADING_SNAPSHOT_INTERVAL_SECONDS="2",
        TRADING_KILL_SWITCH_BROKER_SUSPEND="true",
        TRADING_MAX_NOTIONAL_PER_ORDER="20000",
        TRADING_MAX_ORDER_QTY="100",
        TRADING_DUPLICATE_INTENT_SECONDS="3",
        TRADING_ORDER_RATE_PER_SECOND="3",
        TRADING_THROTTLE_LATCH_HITS="2",
        TRADING_DAILY_NOTIONAL_CAP="30000",
    ) as world:
        yield world


def limit_buy(sim: RunningSimulator, label: str, symbol: str, qty: int, limit: int) -> str:
    order = sim.trading_client(label).submit_order(
        LimitOrderRequest(
            symbol=symbol,
            qty=qty,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            limit_price=limit,
        )
    )
    return str(order["id"] if isinstance(order, dict) else order.id)


def resting_order(sim: RunningSimulator, label: str, symbol: str = "AAPL") -> str:
    """A limit buy far below the price: it stays open."""
    return limit_buy(sim, label, symbol, 1, 1)


def order_status(sim: RunningSimulator, label: str, order_id: str) -> str:
    return next(str(o["status"]) for o in sim.admin.orders(label) if o["id"] == order_id)


def positions(sim: RunningSimulator, label: str) -> dict[str, str]:
    return {p["symbol"]: p["qty"] for p in sim.admin.account(label)["positions"]}


def suspended(sim: RunningSimulator, label: str) -> bool:
    return bool(sim.admin.account(label)["account"]["trade_suspended_by_user"])


async def test_trading_states(world: World) -> None:
    opening = decision("alpha", notional="1000")  # 10 AAPL
    await send(world.stack, world.env, opening)
    await wait_executed(world.dsn, opening)
    await wait_until(lambda: _async(positions(world.sim, "alpha").get("AAPL") == "10"), 20, "pos")

    out = world.cli("trading-state", "halted", "--account", "alpha", "--reason", "drill")
    assert "trading state halted for alpha" in out
    await world.state("alpha", "halted")
    lane = world.lane("alpha")["trading_state"]
    assert lane["scope"] == "alpha" and lane["reason"] == "drill"
    halted, other = decision("alpha", "MSFT"), decision("beta", "MSFT")
    await send(world.stack, world.env, halted, other)
    assert reasons(await wait_status(world.dsn, halted, "rejected")) == ["trading_halted"]
    await wait_executed(world.dsn, other)
    assert broker_orders(world.sim, halted) == []
    metrics = world.worker.get("/metrics").text
    assert 'torghut_trading_state{account="alpha",state="halted"} 1.0' in metrics
    assert 'torghut_trading_state{account="beta",state="active"} 1.0' in metrics

    await world.control(state_command(TradingState.reducing, "alpha", "op", "wind down"))
    await world.state("alpha", "reducing")
    grows, reduces = decision("alpha", "MSFT"), decision("alpha", "AAPL", "sell", "500")
    await send(world.stack, world.env, grows, reduces)
    row = await wait_status(world.dsn, grows, "rejected")
    assert reasons(row) == ["trading_reducing_not_reducing"]
    await wait_executed(world.dsn, reduces)

    # The most restrictive scope wins: alpha active, every account halted.
    await world.control(state_command(TradingState.active, "alpha", "op", "back"))
    await world.control(state_command(TradingState.halted, None, "op", "all stop"))
    await world.state("beta", "halted")
    await world.state("alpha", "halted")
    both = [decision("alpha", "BTC/USD", notional="500"), decision("beta", "AAPL")]
    await send(world.stack, world.env, *both)
    for d in both:
        assert reasons(await wait_status(world.dsn, d, "rejected")) == ["trading_halted"]
    await world.control(state_command(TradingState.active, None, "op", "resume"))
    await world.state("beta", "active")
    await world.state("alpha", "active")
    after = decision("alpha", "BTC/USD", notional="500")
    await send(world.stack, world.env, after)
    await wait_executed(world.dsn, after)

    async def audited() -> list[Any] | None:
        rows = [r for r in await world.actions("alpha") if r["kind"] == "trading_state"]
        return rows if len(rows) >= 5 else None

    rows = await wait_until(audited, 20, "trading state audit rows")
    assert [r["action"] for r in rows[:2]] == ["halted", "reducing"]
    assert rows[0]["operator"] and rows[0]["reason"] == "drill" and rows[0]["status"] == "done"


async def _async(value: Any) -> Any:
    return value


async def test_kill_switch_cancel_once_and_not_again_after_a_restart(world: World) -> None:
    mine, theirs = resting_order(world.sim, "alpha"), resting_order(world.sim, "beta")
    world.cli("kill-switch", "--account", "alpha", "--cancel", "--reason", "drill cancel")

    async def cancelled() -> bool:
        return order_status(world.sim, "alpha", mine) == "canceled"

    await wait_until(cancelled, 20, "alpha's open order cancelled")
    assert order_status(world.sim, "beta", theirs) in ("new", "accepted")
    await wait_until(lambda: _async(suspended(world.sim, "alpha")), 20, "suspend_trade mirrored")
    assert not suspended(world.sim, "beta")
    blocked, other = decision("alpha", "MSFT"), decision("beta", "BTC/USD", notional="500")
    await send(world.stack, world.env, blocked, other)
    assert reasons(await wait_status(world.dsn, blocked, "rejected")) == ["kill_switch_enabled"]
    await wait_executed(world.dsn, other)
    rows = [r for r in await world.actions("alpha") if r["kind"] == "kill_switch"]
    assert len(rows) == 1 and rows[0]["action"] == "cancel" and rows[0]["status"] == "done"
    assert json.loads(rows[0]["result"])["cancelled_orders"] == 1
    assert rows[0]["reason"] == "drill cancel"
    assert [r for r in await world.actions("beta") if r["kind"] == "kill_switch"] == []

    # A restart replays the control topic: the switch holds, nothing is cancelled again.
    world.worker.stop()
    # The broker refuses alpha's new orders (suspend_trade): lift it to place one by hand.
    _suspend(world.sim, "alpha", False)
    late = resting_order(world.sim, "alpha", "MSFT")
    world.worker = start_worker(world.stack, world.env, world.worker.data_dir, "risk-2")
    await wait_until(lambda: _async(world.lane("alpha")["kill_switch"]["engaged"]), 20, "replay")
    await asyncio.sleep(4)  # several upkeep ticks
    assert order_status(world.sim, "alpha", late) in ("new", "accepted")
    rows = [r for r in await world.actions("alpha") if r["kind"] == "kill_switch"]
    assert len(rows) == 1 and rows[0]["attempts"] == 1

    world.cli("kill-switch", "--account", "alpha", "--off", "--reason", "done")
    await wait_until(
        lambda: _async(not world.lane("alpha")["kill_switch"]["engaged"]), 20, "released"
    )
    assert not suspended(world.sim, "alpha")
    rows = [r for r in await world.actions("alpha") if r["kind"] == "kill_switch"]
    assert [r["action"] for r in rows] == ["cancel", "release"]
    world.sim.trading_client("alpha").cancel_order_by_id(late)


def _suspend(sim: RunningSimulator, label: str, value: bool) -> None:
    sim.trading_client(label).patch("/account/configurations", {"suspend_trade": value})


async def test_kill_switch_flatten_with_open_and_partially_filled_orders(world: World) -> None:
    beta_open = resting_order(world.sim, "beta")
    beta_before = positions(world.sim, "beta")
    assert beta_before
    open_id = resting_order(world.sim, "alpha", "MSFT")
    # A partially filled order: the first part fills (fills come in batches FILL_DELAY_MS
    # apart), then the price moves out of its limit before the next part.
    world.sim.admin.settings("alpha", partial_fill_prob=1.0)
    world.sim.admin.set_prices({"MSFT": "200"})
    try:
        partial_id = limit_buy(world.sim, "alpha", "MSFT", 40, 200)
    finally:
        world.sim.admin.settings("alpha", partial_fill_prob=0.0)

    def partial_state() -> tuple[str, str]:
        o = next(o for o in world.sim.admin.orders("alpha") if o["id"] == partial_id)
        return str(o["status"]), str(o["filled_qty"])

    deadline = time.monotonic() + 10
    while partial_state()[0] != "partially_filled" and time.monotonic() < deadline:
        time.sleep(0.02)
    world.sim.admin.set_prices({"MSFT": "300"})

    status, filled = partial_state()
    assert status == "partially_filled" and 0 < float(filled) < 40, (status, filled)
    assert "MSFT" in positions(world.sim, "alpha") and "AAPL" in positions(world.sim, "alpha")

    world.cli("kill-switch", "--account", "alpha", "--flatten", "--reason", "drill flatten")

    async def flat() -> bool:
        return positions(world.sim, "alpha") == {}

    await wait_until(flat, 30, "alpha flattened")
    assert order_status(world.sim, "alpha", open_id) == "canceled"
    assert partial_state()[0] == "canceled"
    assert positions(world.sim, "beta") == beta_before
    assert order_status(world.sim, "beta", beta_open) in ("new", "accepted")
    rows = [r for r in await world.actions("alpha") if r["action"] == "flatten"]
    assert len(rows) == 1 and rows[0]["status"] == "done"
    closed = json.loads(rows[0]["result"])["closed_positions"]
    assert {c["symbol"] for c in closed} >= {"MSFT"}
    # beta trades on throughout
    other = decision("beta", "MSFT", notional="600")
    world.sim.admin.set_prices({"MSFT": "200"})
    await send(world.stack, world.env, other)
    await wait_executed(world.dsn, other)

    await world.control(
        ControlCommand(account="alpha", engaged=False, operator="op", reason="done")
    )
    await wait_until(
        lambda: _async(not world.lane("alpha")["kill_switch"]["engaged"]), 20, "released"
    )
    assert not suspended(world.sim, "alpha")
    world.sim.trading_client("beta").cancel_order_by_id(beta_open)


async def test_max_order_quantity_and_duplicate_intent(world: World) -> None:
    big = decision("alpha", "AAPL", notional="12000")  # 120 shares > 100
    first = decision("alpha", "MSFT", notional="400")
    again = decision("alpha", "MSFT", notional="400")  # same symbol and side, another decision
    await send(world.stack, world.env, big, first, again)
    assert reasons(await wait_status(world.dsn, big, "rejected")) == ["max_order_qty_exceeded"]
    await wait_executed(world.dsn, first)
    assert reasons(await wait_status(world.dsn, again, "rejected")) == ["duplicate_intent"]
    time.sleep(3.2)
    later = decision("alpha", "MSFT", notional="400")
    await send(world.stack, world.env, later)
    await wait_executed(world.dsn, later)


async def test_daily_notional_cap(world: World) -> None:
    first = decision("gamma", "BTC/USD", notional="15000")
    second = decision("gamma", "MSFT", notional="14000")
    over = decision("gamma", "AAPL", notional="2000")
    await send(world.stack, world.env, first, second, over)
    await wait_executed(world.dsn, first)
    await wait_executed(world.dsn, second)
    assert reasons(await wait_status(world.dsn, over, "rejected")) == [
        "daily_notional_cap_exceeded"
    ]
    other = decision("beta", "AAPL", notional="2000")
    await send(world.stack, world.env, other)
    await wait_executed(world.dsn, other)


async def test_order_rate_throttle_latches_the_account_to_halted(world: World) -> None:
    burst = [
        decision("delta", "AAPL", notional="300"),
        decision("delta", "MSFT", notional="400"),
        decision("delta", "BTC/USD", notional="500"),
        decision("delta", "AAPL", "sell", "100"),
        decision("delta", "MSFT", "sell", "200"),
    ]
    await send(world.stack, world.env, *burst)
    for d in burst[:3]:
        await wait_executed(world.dsn, d)
    for d in burst[3:]:
        assert "order_rate_throttled" in reasons(await wait_status(world.dsn, d, "rejected"))
    await world.state("delta", "halted")
    lane = world.lane("delta")["trading_state"]
    assert lane["operator"] == "torghut-streams" and "order rate throttle" in lane["reason"]
    assert world.lane("beta")["trading_state"]["state"] == "active"
    # Latched through the control topic: it holds until an operator sets the account active.
    time.sleep(1.5)
    held = decision("delta", "AAPL", notional="300")
    await send(world.stack, world.env, held)
    assert "trading_halted" in reasons(await wait_status(world.dsn, held, "rejected"))
    world.cli("trading-state", "active", "--account", "delta", "--reason", "checked")
    await world.state("delta", "active")
    time.sleep(1.5)
    again = decision("delta", "MSFT", notional="300")
    await send(world.stack, world.env, again)
    await wait_executed(world.dsn, again)


async def test_price_feed_reads_recent_signals_from_kafka(stack: StackInfo) -> None:
    """The price collar's reference reader against the real broker (no worker): signals
    produced before it starts (within the age) and after are both seen."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from streams.execution.price_feed import PriceFeed
    from streams.signal_decoder import SignalDecoder
    from tests.support.kafka import create_topics

    topic = f"{unique('prices')}.ta.signals.v1"
    await create_topics(stack.bootstrap, [topic])
    seen: dict[str, Decimal] = {}

    class Sink:
        def record_price(self, symbol: str, price: Decimal, at: Any) -> None:
            seen[symbol] = price

    def signal(symbol: str, price: float) -> tuple[bytes, bytes]:
        now = datetime.now(UTC).isoformat()
        body = {"ingest_ts": now, "event_ts": now, "symbol": symbol, "seq": 1, "price": price}
        return symbol.encode(), json.dumps(body).encode()

    await produce(stack.bootstrap, topic, [signal("AAPL", 100.0)])
    feed = PriceFeed(
        stack.bootstrap, topic, SignalDecoder(frozenset({1})), Sink(), max_age_seconds=300
    )
    task = asyncio.create_task(feed.run())
    try:
        await wait_until(lambda: _async("AAPL" in seen), 20, "the earlier signal")
        await produce(stack.bootstrap, topic, [signal("MSFT", 200.0)])
        await wait_until(lambda: _async("MSFT" in seen), 20, "a later signal")
    finally:
        task.cancel()
    assert seen == {"AAPL": Decimal("100.0"), "MSFT": Decimal("200.0")}


async def test_per_account_limits_from_the_registry(world: World) -> None:
    """epsilon is refused at its own caps where the other accounts trade at the settings'."""
    big = decision("epsilon", "AAPL", notional="800")  # 8 shares: above epsilon's 5
    theirs = decision("beta", "AAPL", notional="800")  # 8 shares: below the settings' 100
    await send(world.stack, world.env, big, theirs)
    assert reasons(await wait_status(world.dsn, big, "rejected")) == ["max_order_qty_exceeded"]
    await wait_executed(world.dsn, theirs)
    first = decision("epsilon", "MSFT", notional="1000")  # 5 shares: sent
    await send(world.stack, world.env, first)
    await wait_executed(world.dsn, first)
    over = decision("epsilon", "BTC/USD", notional="600")  # 1600 today: above epsilon's 1500
    await send(world.stack, world.env, over)
    assert reasons(await wait_status(world.dsn, over, "rejected")) == [
        "daily_notional_cap_exceeded"
    ]
    gamma_rows = await fetch(
        world.dsn,
        "SELECT status FROM trade_decisions WHERE alpaca_account_label = 'gamma' "
        "AND rejection_reasons ? 'daily_notional_cap_exceeded'",
    )
    assert gamma_rows  # gamma met its own cap earlier, at 30000 (test_daily_notional_cap)


async def test_windows_survive_a_worker_restart(world: World) -> None:
    """The duplicate-intent window and the day's notional are rebuilt from Postgres when the
    lane starts on the new worker: a restart does not let epsilon past its caps."""
    world.worker.stop()
    world.worker = start_worker(world.stack, world.env, world.worker.data_dir, "risk-3")

    async def restored() -> dict[str, Any] | None:
        result = world.lane("epsilon").get("reconciliation", {}).get("last_result", {})
        return result if result.get("orders_restored") else None

    result = await wait_until(restored, 30, "epsilon's windows restored")
    assert result["orders_restored"] >= 1  # its MSFT order, sent before the restart
    again = decision("epsilon", "MSFT", notional="400")  # MSFT buy sent < 600 s ago
    await send(world.stack, world.env, again)
    assert reasons(await wait_status(world.dsn, again, "rejected")) == ["duplicate_intent"]
    other = decision("epsilon", "AAPL", notional="400")  # 1000 + 400 <= 1500: sent
    await send(world.stack, world.env, other)
    await wait_executed(world.dsn, other)
    over = decision("epsilon", "BTC/USD", notional="200")  # 1400 + 200 > 1500
    await send(world.stack, world.env, over)
    assert reasons(await wait_status(world.dsn, over, "rejected")) == [
        "daily_notional_cap_exceeded"
    ]
    assert broker_orders(world.sim, again) == [] and broker_orders(world.sim, over) == []
