"""Manual clock, rate limit, determinism, day-order expiry, startup and the CLI process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from simulator.testing import (
    RunningSimulator,
    SimulatorProcess,
    TradeUpdateCollector,
    wait_order_status,
)

ACCOUNTS = {
    "accounts": [
        {"label": "a", "key": "K-A", "secret": "S-A", "shorting_allowed": True},
        {"label": "b", "key": "K-B", "secret": "S-B"},
        {"label": "slow", "key": "K-SLOW", "secret": "S-SLOW", "rate_limit_per_minute": 5},
    ]
}
START = "2026-01-05T15:00:00Z"  # Monday 10:00 New York


@pytest.fixture(scope="module")
def manual() -> Iterator[RunningSimulator]:
    with RunningSimulator(ACCOUNTS, seed=3, manual_clock=True) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh_manual(request: pytest.FixtureRequest) -> None:
    if "manual" in request.fixturenames:
        request.getfixturevalue("manual").admin.reset()


def day_limit(price: float, tif: TimeInForce = TimeInForce.DAY) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol="AAPL", qty=1, side=OrderSide.BUY, time_in_force=tif, limit_price=price
    )


def test_rate_limit_headers_and_429(manual: RunningSimulator) -> None:
    client = manual.trading_client("slow", retries=0)
    seen: list[Any] = []
    client._session.hooks["response"].append(lambda r, *a, **k: seen.append(r.headers))
    for _ in range(5):
        client.get_account()
    assert [h["X-Ratelimit-Remaining"] for h in seen] == ["4", "3", "2", "1", "0"]
    assert {h["X-Ratelimit-Limit"] for h in seen} == {"5"}
    window_end = int(seen[0]["X-Ratelimit-Reset"])
    assert window_end > datetime.fromisoformat(START.replace("Z", "+00:00")).timestamp()
    with pytest.raises(APIError) as err:
        client.get_account()
    assert (err.value.status_code, err.value.code) == (429, 42910000)
    assert err.value.response.headers["X-Ratelimit-Remaining"] == "0"
    manual.trading_client("a").get_account()  # other accounts have their own budget
    manual.admin.advance_clock(60)
    client.get_account()
    assert seen[-1]["X-Ratelimit-Remaining"] == "4"


def test_manual_clock_stamps_orders_and_expires_day_orders(manual: RunningSimulator) -> None:
    client = manual.trading_client("a")
    with TradeUpdateCollector(manual, "a") as stream:
        day = client.submit_order(day_limit(100))
        gtc = client.submit_order(day_limit(100, TimeInForce.GTC))
        assert day.submitted_at == datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
        assert day.expires_at == datetime(2026, 1, 5, 21, 0, tzinfo=UTC)  # 16:00 New York
        stream.wait_count(2)
        manual.admin.advance_clock(3600)
        assert client.get_order_by_id(day.id).status.value == "new"
        manual.admin.advance_clock(to="2026-01-05T21:00:00Z")
        updates = stream.wait_count(3)
    assert updates[-1].event == "expired" and updates[-1].order.id == day.id
    expired = client.get_order_by_id(day.id)
    assert expired.expired_at == datetime(2026, 1, 5, 21, 0, tzinfo=UTC)
    assert client.get_order_by_id(gtc.id).status.value == "new"
    assert client.get_clock().timestamp == datetime(2026, 1, 5, 21, 0, tzinfo=UTC)


def scenario(sim: RunningSimulator) -> dict[str, Any]:
    """A fixed sequence of SDK calls; returns everything the simulator recorded."""
    a, b = sim.trading_client("a"), sim.trading_client("b")
    sim.admin.settings("a", partial_fill_prob=0.5)
    for qty in (5, 8, 13):
        order = a.submit_order(
            MarketOrderRequest(
                symbol="NVDA", qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        wait_order_status(a, order.id, "filled")
        sim.admin.advance_clock(1.5)
    resting = b.submit_order(day_limit(150))
    wait_order_status(b, resting.id, "new")
    sim.admin.set_prices({"AAPL": "149"})
    wait_order_status(b, resting.id, "filled")
    short = a.submit_order(
        MarketOrderRequest(symbol="TSLA", qty=3, side=OrderSide.SELL, time_in_force=TimeInForce.DAY)
    )
    wait_order_status(a, short.id, "filled")
    return {
        label: (
            sim.admin.orders(label),
            sim.admin.events(label),
            sim.admin.account(label)["account"],
        )
        for label in ("a", "b")
    }


def test_same_seed_and_manual_clock_replay_exactly() -> None:
    runs = []
    for seed in (11, 11, 12):
        with RunningSimulator(ACCOUNTS, seed=seed, manual_clock=True) as sim:
            runs.append(scenario(sim))
    assert runs[0] == runs[1]
    assert [o["id"] for o in runs[0]["a"][0]] != [o["id"] for o in runs[2]["a"][0]]
    assert len(runs[0]["a"][1]) > 2 * 4  # partial fills happened in the replayed run


def test_in_process_start_is_fast() -> None:
    started = time.monotonic()
    sim = RunningSimulator(ACCOUNTS)
    try:
        assert time.monotonic() - started < 0.5
        assert sim.admin.call("GET", "/admin/health") == {"ok": True}
    finally:
        sim.stop()


def test_accounts_can_be_added_at_runtime(manual: RunningSimulator) -> None:
    manual.admin.add_account("late", "K-LATE", "S-LATE", cash="2500")
    from alpaca.trading.client import TradingClient

    client = TradingClient("K-LATE", "S-LATE", url_override=manual.url)
    assert client.get_account().cash == "2500"


def test_cli_process_serves_and_exits_cleanly_on_sigterm() -> None:
    proc = SimulatorProcess(ACCOUNTS, seed=5)
    try:
        assert proc.url.startswith("http://127.0.0.1:") and proc.ws_url.endswith("/stream")
        client = proc.trading_client("a")
        order = client.submit_order(
            MarketOrderRequest(
                symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
            )
        )
        assert wait_order_status(client, order.id, "filled").filled_avg_price == "550"
    finally:
        proc.stop()
    assert proc.returncode == 0
