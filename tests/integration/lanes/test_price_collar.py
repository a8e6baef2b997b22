"""The price collar end to end: a worker follows the TA signals topic for reference prices and
refuses, at the last moment, an order priced too far from the latest one (or with none)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.integration.lanes.helpers import (
    World,
    broker_orders,
    decision,
    reasons,
    running_world,
    send,
    wait_executed,
    wait_status,
)
from tests.support.kafka import produce
from tests.support.stack import StackInfo

pytestmark = pytest.mark.integration

LABELS = ["alpha", "beta"]


@pytest.fixture(scope="module")
def world(
    stack: StackInfo, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    with running_world(
        stack,
        head_template,
        tmp_path_factory,
        "collar",
        LABELS,
        TRADING_PRICE_COLLAR_BPS="100",  # 1 %
        TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS="300",
    ) as world:
        yield world


def ta_signal(symbol: str, price: float) -> tuple[bytes, bytes]:
    now = datetime.now(UTC).isoformat()
    body = {"ingest_ts": now, "event_ts": now, "symbol": symbol, "seq": 1, "price": price}
    return symbol.encode(), json.dumps(body).encode()


async def test_orders_far_from_the_latest_ta_price_or_without_one_are_refused(
    world: World,
) -> None:
    await produce(
        world.stack.bootstrap, world.env["TORGHUT_SIGNALS_TOPIC"], [ta_signal("AAPL", 100.0)]
    )
    near = decision("alpha", "AAPL", price="100.5")  # 50 bps: inside the collar
    other = decision("beta", "AAPL", price="100")
    await asyncio.sleep(3)  # the worker's reader polls every 0.1-0.5 s: it has the price by now
    await send(world.stack, world.env, near, other)
    await wait_executed(world.dsn, near)
    await wait_executed(world.dsn, other)

    far = decision("alpha", "AAPL", price="103")  # 300 bps
    unknown = decision("alpha", "MSFT")  # no TA price for MSFT
    await send(world.stack, world.env, far, unknown)
    assert reasons(await wait_status(world.dsn, far, "rejected")) == ["price_collar_exceeded"]
    assert reasons(await wait_status(world.dsn, unknown, "rejected")) == ["price_reference_missing"]
    assert broker_orders(world.sim, far) == [] and broker_orders(world.sim, unknown) == []
    assert len(broker_orders(world.sim, near)) == 1 and len(broker_orders(world.sim, other)) == 1
