"""Each fault switch, observed through alpaca-py's TradingClient and TradingStream."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest

from simulator.testing import RunningSimulator, TradeUpdateCollector
from simulator.testing import wait_order_status as wait_status

Client = Callable[..., Any]


def market(symbol: str = "AAPL", qty: float = 1, **kw: Any) -> MarketOrderRequest:
    return MarketOrderRequest(
        symbol=symbol, qty=qty, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, **kw
    )


def statuses(client: Any) -> list[int]:
    """Record the HTTP status of every response the SDK's own session receives."""
    seen: list[int] = []
    client._session.hooks["response"].append(lambda r, *a, **k: seen.append(r.status_code))
    return seen


def api_error(call: Callable[[], Any]) -> APIError:
    with pytest.raises(APIError) as err:
        call()
    return err.value


def test_drop_next_events(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    sim.admin.set_faults("alpha", drop_next_events=2)
    with TradeUpdateCollector(sim, "alpha") as stream:
        lost = c.submit_order(market())
        sim.admin.wait_for_events("alpha", 2)
        kept = c.submit_order(market())
        updates = stream.wait_for(lambda u: any(x.event == "fill" for x in u))
    assert [(u.event, u.order.id) for u in updates] == [("new", kept.id), ("fill", kept.id)]
    assert wait_status(c, lost.id, "filled")  # state moved on; only the events were lost
    log = sim.admin.events("alpha")
    assert [e["dropped"] for e in log] == [True, True, False, False]
    assert sim.admin.faults("alpha")["drop_next_events"] == 0


def test_duplicate_events(sim: RunningSimulator, client: Client) -> None:
    sim.admin.set_faults("alpha", duplicate_events=True)
    with TradeUpdateCollector(sim, "alpha") as stream:
        client("alpha").submit_order(market())
        updates = stream.wait_count(4)
    assert [u.event for u in updates] == ["new", "new", "fill", "fill"]
    assert updates[0].execution_id == updates[1].execution_id
    assert updates[2].execution_id == updates[3].execution_id != updates[0].execution_id


def test_reorder_events(sim: RunningSimulator, client: Client) -> None:
    sim.admin.set_faults("alpha", reorder_events=True)
    with TradeUpdateCollector(sim, "alpha") as stream:
        client("alpha").submit_order(market())
        updates = stream.wait_count(2)
        assert [u.event for u in updates] == ["fill", "new"]
        # A lone event is not held forever: it is released after reorder_hold_ms.
        client("alpha").submit_order(
            LimitOrderRequest(
                symbol="AAPL",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=1,
            )
        )
        assert stream.wait_count(3)[-1].event == "new"


def test_post_response_delayed_past_the_fill(sim: RunningSimulator, client: Client) -> None:
    sim.admin.set_faults("alpha", delay_post_response_ms=300)
    with TradeUpdateCollector(sim, "alpha") as stream:
        started = time.monotonic()
        order = client("alpha").submit_order(market())
        elapsed = time.monotonic() - started
        seen = [(u.event, u.order.id) for u in stream.updates]
    assert elapsed >= 0.3
    assert ("fill", order.id) in seen  # the fill event arrived before the POST answer
    assert order.status == OrderStatus.PENDING_NEW  # the answer still shows acceptance


def test_504_after_accept_meets_422_on_sdk_retry(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")  # SDK default: 3 retries on 429/504 (sleep removed)
    seen = statuses(c)
    sim.admin.set_faults("alpha", post_504_after_accept=1)
    err = api_error(lambda: c.submit_order(market(client_order_id="retried")))
    assert seen == [504, 422]  # alpaca-py retried the POST by itself
    assert (err.status_code, err.code) == (422, 40010001)
    order = c.get_order_by_client_id("retried")  # the order landed exactly once
    assert len(sim.admin.orders("alpha")) == 1
    wait_status(c, order.id, "filled")

    no_retry = client("alpha", retries=0)
    sim.admin.set_faults("alpha", post_504_after_accept=1)
    err = api_error(lambda: no_retry.submit_order(market(client_order_id="lost-answer")))
    assert err.status_code == 504
    with pytest.raises(ValueError):
        err.code  # noqa: B018 -- gateway HTML, not JSON
    assert no_retry.get_order_by_client_id("lost-answer").client_order_id == "lost-answer"


def test_http_5xx(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    sim.admin.set_faults("alpha", http_5xx=1)
    err = api_error(c.get_account)
    assert (err.status_code, err.code) == (500, 50010000)
    assert c.get_account().status.value == "ACTIVE"
    sim.admin.set_faults("alpha", http_5xx=1, http_5xx_status=503, methods=["POST"])
    assert c.get_account()  # GET is not affected
    err = api_error(lambda: c.submit_order(market()))
    assert err.status_code == 503
    assert sim.admin.orders("alpha") == []  # refused before processing
    assert c.submit_order(market())


def test_hang_next_never_answers(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    sim.admin.set_faults("alpha", hang_next=1, hang_seconds=0.6)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(c.get_account)
        time.sleep(0.3)
        assert not pending.done()  # no answer while hanging (the SDK has no timeout)
        with pytest.raises(requests.exceptions.ConnectionError):
            pending.result(5)  # then the connection is dropped unanswered
    assert c.get_account().status.value == "ACTIVE"


def test_hang_after_accept(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    sim.admin.set_faults("alpha", hang_after_accept=1, hang_seconds=0.2)
    with pytest.raises(requests.exceptions.ConnectionError):
        c.submit_order(market(client_order_id="accepted-then-hung"))
    order = c.get_order_by_client_id("accepted-then-hung")
    assert wait_status(c, order.id, "filled")


def test_force_429(sim: RunningSimulator, client: Client) -> None:
    sim.admin.set_faults("alpha", force_429=1)
    err = api_error(client("alpha", retries=0).get_account)
    assert (err.status_code, err.code) == (429, 42910000)
    assert err.response.headers["X-Ratelimit-Remaining"] == "0"
    c = client("alpha")
    seen = statuses(c)
    sim.admin.set_faults("alpha", force_429=2)
    assert c.get_account()  # the SDK's retries absorb two 429s
    assert seen == [429, 429, 200]


def test_reject_next_orders(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    sim.admin.set_faults("alpha", reject_next_orders=1)
    with TradeUpdateCollector(sim, "alpha") as stream:
        rejected = c.submit_order(market())
        assert rejected.status == OrderStatus.PENDING_NEW
        updates = stream.wait_count(2)
        assert [u.event for u in updates] == ["new", "rejected"]
        final = c.get_order_by_id(rejected.id)
        assert final.status == OrderStatus.REJECTED and final.failed_at is not None
        assert c.get_all_positions() == []
        ok = c.submit_order(market())
        stream.wait_count(4)
    assert c.get_order_by_id(ok.id).status == OrderStatus.FILLED


def test_faults_are_per_account_and_clearable(sim: RunningSimulator, client: Client) -> None:
    sim.admin.set_faults("alpha", http_5xx=5, drop_next_events=3, reorder_events=True)
    assert client("beta").get_account()  # beta is unaffected
    sim.admin.clear_faults("alpha")
    faults = sim.admin.faults("alpha")
    assert faults["http_5xx"] == 0 and faults["reorder_events"] is False
    assert client("alpha").get_account()
    with pytest.raises(Exception, match="unknown fault"):
        sim.admin.set_faults("alpha", explode=True)
