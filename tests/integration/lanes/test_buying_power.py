"""Buying power that counts the account's open orders (issue #17), end to end: a real worker,
real Kafka and Postgres, the simulator through alpaca-py, the trade-updates forwarder.

alpha has 3000 of buying power when its lane takes its snapshot. A limit buy placed by hand at
the broker afterwards rests unfilled and holds 900 of it; the lane has no newer snapshot (the
refresh interval is an hour), it sees the order through the order feed. A buy of 2500 — which
fits the snapshot's 3000 — is refused `insufficient_buying_power` before any POST; a buy of
1800, which fits the 2100 left, is sent. beta is not touched by alpha's order.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest

from simulator.testing import RunningSimulator
from tests.integration.lanes.helpers import (
    KEYS,
    PRICES,
    broker_orders,
    decision,
    forwarding,
    lane_env,
    prepare_topics,
    reasons,
    registry,
    send,
    start_worker,
    wait_executed,
    wait_status,
    wait_until,
)
from tests.support.pg import fetch
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

LABELS = ("alpha", "beta")


async def snapshots(dsn: str) -> list[tuple[str, Decimal]]:
    rows = await fetch(
        dsn,
        "SELECT alpaca_account_label, buying_power FROM position_snapshots "
        "WHERE alpaca_account_label = 'alpha' ORDER BY id",
    )
    return [(r["alpaca_account_label"], r["buying_power"]) for r in rows]


async def test_an_open_limit_order_holds_buying_power_the_snapshot_does_not_show(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    accounts = [
        {"label": "alpha", "key": KEYS["alpha"][0], "secret": KEYS["alpha"][1], "cash": "3000"},
        {"label": "beta", "key": KEYS["beta"][0], "secret": KEYS["beta"][1], "cash": "100000"},
    ]
    sim = RunningSimulator({"accounts": accounts})
    try:
        sim.admin.set_prices(PRICES)
        env = lane_env(
            "bp",
            head_dsn,
            registry(sim.url, list(LABELS)),
            TRADING_SNAPSHOT_INTERVAL_SECONDS="3600",
            TRADING_RECONCILE_INTERVAL_SECONDS="3600",
            TRADING_MAX_POSITION_PCT_EQUITY="1.0",
            TORGHUT_ORDER_FEED_BATCH_SECONDS="0.1",
        )
        await prepare_topics(stack, env)
        workers.append(start_worker(stack, env, tmp_path / "w", "bp"))
        async with forwarding(stack, env, sim, LABELS):
            # The forwarder's connect asks for a reconciliation, which refreshes the snapshot:
            # let it land before the order is placed by hand.
            async def settled() -> bool:
                first = await snapshots(head_dsn)
                await asyncio.sleep(2.0)
                return bool(first) and first == await snapshots(head_dsn)

            await wait_until(settled, 30, "alpha's snapshot settled")
            taken = await snapshots(head_dsn)
            assert taken[-1][1] == Decimal(3000)

            resting = sim.trading_client("alpha").submit_order(
                LimitOrderRequest(
                    symbol="AAPL",
                    qty=10,
                    side=OrderSide.BUY,
                    time_in_force=TimeInForce.DAY,
                    limit_price=90,  # below the price (100): it rests, holding 900
                    client_order_id="by-hand-limit",
                )
            )
            order_id = str(resting.id)
            account = sim.admin.account("alpha")["account"]
            assert Decimal(account["buying_power"]) == Decimal(2100)  # the broker holds it back

            async def seen() -> bool:
                rows = await fetch(
                    head_dsn,
                    "SELECT 1 FROM execution_order_events "
                    "WHERE alpaca_account_label = 'alpha' AND alpaca_order_id = $1",
                    order_id,
                )
                return bool(rows)

            await wait_until(seen, 30, "the order by hand in alpha's order feed")
            await asyncio.sleep(0.5)  # stored, then applied and observed in the same batch

            too_big = decision("alpha", "AAPL", notional="2500")  # fits 3000, not 2100
            await send(stack, env, too_big)
            row = await wait_status(head_dsn, too_big, "rejected")
            assert reasons(row) == ["insufficient_buying_power"]
            assert broker_orders(sim, too_big) == []  # refused before any POST

            fits = decision("alpha", "MSFT", notional="1800")  # 9 x 200 <= 2100
            other = decision("beta", "AAPL", notional="2500")
            await send(stack, env, fits, other)
            await wait_executed(head_dsn, fits)
            await wait_executed(head_dsn, other)
            assert len(broker_orders(sim, fits)) == 1

            # No snapshot was taken in between: the lane refused from its own count.
            assert await snapshots(head_dsn) == taken
            status = next(o for o in sim.admin.orders("alpha") if o["id"] == order_id)["status"]
            assert status in ("new", "accepted")  # still open, unfilled, never cancelled
    finally:
        sim.stop()
