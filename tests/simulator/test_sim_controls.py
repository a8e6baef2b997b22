"""Broker-side controls of the simulator, through alpaca-py: `suspend_trade`, pattern-day-trader
and sub-penny refusals, and fill activities with page tokens (what the risk engine relies on)."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from alpaca.trading.enums import OrderSide

from simulator.testing import wait_order_status as wait_status
from tests.simulator.test_sim_sdk import api_error, limit, market

Client = Callable[..., Any]


def test_suspend_trade_makes_the_broker_refuse_new_orders(client: Client) -> None:
    c = client("alpha")
    config = c.get_account_configurations()
    assert config.suspend_trade is False
    config.suspend_trade = True
    assert c.set_account_configurations(config).suspend_trade is True
    assert c.get_account().trade_suspended_by_user is True
    refused = api_error(lambda: c.submit_order(market("AAPL", 1)))
    assert refused.status_code == 403 and refused.code == 40310000
    assert client("beta").submit_order(market("AAPL", 1)).symbol == "AAPL"  # per account
    config.suspend_trade = False
    c.set_account_configurations(config)
    assert c.submit_order(market("AAPL", 1)).symbol == "AAPL"


def test_a_configuration_change_is_validated(client: Client) -> None:
    c = client("alpha")
    bad = api_error(lambda: c.patch("/account/configurations", {"suspend_trade": "yes"}))
    assert bad.status_code == 422
    unknown = api_error(lambda: c.patch("/account/configurations", {"no_such": True}))
    assert unknown.status_code == 422


def test_sub_penny_limit_prices_are_refused(client: Client) -> None:
    c = client("alpha")
    refused = api_error(lambda: c.submit_order(limit("AAPL", 1, 190.123)))
    assert refused.status_code == 422 and refused.code == 42210000
    assert "sub-penny" in refused.message
    assert c.submit_order(limit("AAPL", 1, 190.12)).limit_price == "190.12"


def round_trip(c: Any) -> None:
    buy = c.submit_order(market("AAPL", 1))
    wait_status(c, buy.id, "filled")
    sell = c.submit_order(market("AAPL", 1, side=OrderSide.SELL))
    wait_status(c, sell.id, "filled")


def test_a_fourth_day_trade_under_25k_is_refused(client: Client) -> None:
    c = client("small")  # $1,000 equity
    for _ in range(3):
        round_trip(c)
    assert c.get_account().daytrade_count == 3
    buy = c.submit_order(market("AAPL", 1))
    wait_status(c, buy.id, "filled")  # opening is allowed
    refused = api_error(lambda: c.submit_order(market("AAPL", 1, side=OrderSide.SELL)))
    assert refused.status_code == 403 and refused.code == 40310100
    # $50,000 equity: the same pattern is not restricted.
    rich = client("beta")
    for _ in range(4):
        round_trip(rich)
    assert rich.get_account().daytrade_count == 4


def test_fill_activities_page_by_token(client: Client) -> None:
    c = client("split")  # every order fills in several executions
    order = c.submit_order(market("AAPL", 4))
    wait_status(c, order.id, "filled")
    rows = c.get("/account/activities/FILL", {"direction": "asc"})
    mine = [r for r in rows if r["order_id"] == str(order.id)]
    assert len(mine) >= 2 and sum(Decimal(r["qty"]) for r in mine) == 4
    assert len({r["execution_id"] for r in rows}) == len(rows)
    assert mine[-1]["type"] == "fill" and mine[-1]["cum_qty"] == "4"
    first = c.get("/account/activities/FILL", {"direction": "asc", "page_size": 1})
    assert first == rows[:1]
    after = c.get(
        "/account/activities/FILL",
        {"direction": "asc", "page_size": 100, "page_token": first[0]["id"]},
    )
    assert after == rows[1:]
    newest_first = c.get("/account/activities", {"activity_types": "FILL"})
    assert newest_first == list(reversed(rows))
    assert api_error(lambda: c.get("/account/activities/DIV", {})).status_code == 422
