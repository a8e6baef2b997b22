"""The simulator through alpaca-py's real TradingClient and TradingStream, over HTTP/websocket."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, LimitOrderRequest, MarketOrderRequest

from simulator.testing import RunningSimulator, TradeUpdateCollector, wait_until
from simulator.testing import wait_order_status as wait_status

D = Decimal
Client = Callable[..., Any]


def market(
    symbol: str, qty: float, side: OrderSide = OrderSide.BUY, **kw: Any
) -> MarketOrderRequest:
    tif = TimeInForce.GTC if "/" in symbol else TimeInForce.DAY
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=tif, **kw)


def limit(
    symbol: str, qty: float, price: float, side: OrderSide = OrderSide.BUY, **kw: Any
) -> LimitOrderRequest:
    return LimitOrderRequest(
        symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, limit_price=price, **kw
    )


def api_error(call: Callable[[], Any]) -> APIError:
    with pytest.raises(APIError) as err:
        call()
    return err.value


def test_submit_get_and_get_by_client_id(client: Client) -> None:
    c = client("alpha")
    submitted = c.submit_order(market("AAPL", 3, client_order_id="sdk-1"))
    assert isinstance(submitted.id, uuid.UUID)
    assert submitted.status == OrderStatus.PENDING_NEW
    assert submitted.client_order_id == "sdk-1" and submitted.qty == "3"
    assert submitted.order_class.value == "simple"
    assert submitted.created_at == submitted.submitted_at == submitted.updated_at
    filled = wait_status(c, submitted.id, "filled")
    assert filled.filled_qty == "3" and filled.filled_avg_price == "190"
    assert filled.filled_at is not None
    by_client = c.get_order_by_client_id("sdk-1")
    assert by_client.id == submitted.id and by_client.status == OrderStatus.FILLED
    assert api_error(lambda: c.get_order_by_id(uuid.uuid4())).status_code == 404
    assert api_error(lambda: c.get_order_by_client_id("nope")).status_code == 404


def test_list_orders_with_filters(client: Client) -> None:
    c = client("alpha")
    first = c.submit_order(market("AAPL", 1))
    second = c.submit_order(market("MSFT", 1))
    third = c.submit_order(market("AAPL", 1, side=OrderSide.SELL))
    resting = c.submit_order(limit("NVDA", 1, 100))
    wait_status(c, third.id, "filled")
    wait_status(c, resting.id, "new")
    ids = lambda orders: [o.id for o in orders]  # noqa: E731

    assert ids(c.get_orders()) == [resting.id]  # default: open
    closed = c.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED))
    assert ids(closed) == [third.id, second.id, first.id]  # default: newest first
    every = c.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.ALL, direction="asc", nested=True)
    )
    assert ids(every) == [first.id, second.id, third.id, resting.id]
    assert ids(c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=2))) == [
        resting.id,
        third.id,
    ]
    by_symbol = c.get_orders(
        GetOrdersRequest(status=QueryOrderStatus.ALL, symbols=["AAPL", "NVDA"])
    )
    assert ids(by_symbol) == [resting.id, third.id, first.id]
    window = GetOrdersRequest(
        status=QueryOrderStatus.ALL, after=first.submitted_at, until=resting.submitted_at
    )
    assert ids(c.get_orders(window)) == [third.id, second.id]  # both bounds exclusive
    sells = c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, side=OrderSide.SELL))
    assert ids(sells) == [third.id]
    err = api_error(lambda: c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, limit=501)))
    assert err.status_code == 422 and err.code == 40010001


def test_cancel_answers_204_then_canceled_event(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    with TradeUpdateCollector(sim, "alpha") as stream:
        order = c.submit_order(limit("AAPL", 2, 150))
        stream.wait_for(lambda u: any(x.event == "new" for x in u))
        assert c.cancel_order_by_id(order.id) is None  # 204, no body
        updates = stream.wait_for(lambda u: any(x.event == "canceled" for x in u))
        assert [u.event for u in updates] == ["new", "canceled"]
        assert updates[-1].order.status == OrderStatus.CANCELED and updates[-1].order.canceled_at
        assert c.get_order_by_id(order.id).status == OrderStatus.CANCELED
        err = api_error(lambda: c.cancel_order_by_id(order.id))
        assert (err.status_code, err.code) == (422, 42210000)

        more = [c.submit_order(limit("MSFT", 1, 100)).id for _ in range(2)]
        responses = c.cancel_orders()
        assert sorted(r.id for r in responses) == sorted(more)
        assert {r.status for r in responses} == {200}
        stream.wait_for(lambda u: sum(x.event == "canceled" for x in u) == 3)
    assert c.get_orders() == []


def test_positions_and_account_consistent_after_fills(
    sim: RunningSimulator, client: Client
) -> None:
    c = client("alpha")
    buy = c.submit_order(market("AAPL", 10))
    msft = c.submit_order(market("MSFT", 2))
    wait_status(c, buy.id, "filled")
    wait_status(c, msft.id, "filled")
    sell = c.submit_order(market("AAPL", 4, side=OrderSide.SELL))
    wait_status(c, sell.id, "filled")
    sim.admin.set_prices({"AAPL": "200"})

    positions = {p.symbol: p for p in c.get_all_positions()}
    assert set(positions) == {"AAPL", "MSFT"}
    aapl = positions["AAPL"]
    assert (aapl.qty, aapl.side.value, aapl.avg_entry_price) == ("6", "long", "190")
    assert (aapl.market_value, aapl.cost_basis, aapl.unrealized_pl) == ("1200", "1140", "60")
    assert c.get_open_position("MSFT").qty == "2"

    cash = D(100000) - 10 * 190 - 2 * 420 + 4 * 190
    account = c.get_account()
    assert D(account.cash) == cash
    assert D(account.long_market_value) == 6 * 200 + 2 * 420
    assert D(account.equity) == cash + 6 * 200 + 2 * 420 == D(account.portfolio_value)
    assert D(account.buying_power) == cash  # multiplier 1: equity - positions value
    c.submit_order(limit("NVDA", 5, 100))  # an open buy holds buying power back
    wait_until(lambda: D(c.get_account().buying_power) == cash - 500)
    err = api_error(lambda: c.get_open_position("TSLA"))
    assert err.status_code == 404


def test_crypto_pairs_fee_and_rules(client: Client) -> None:
    c = client("alpha")
    order = c.submit_order(market("BTC/USD", 0.5))
    assert order.symbol == "BTC/USD"
    filled = wait_status(c, order.id, "filled")
    assert filled.filled_qty == "0.5"
    position = c.get_open_position("BTCUSD")
    assert position.symbol == "BTCUSD" and position.asset_class.value == "crypto"
    assert position.qty == "0.49875"  # 0.25% fee taken in BTC
    assert D(c.get_account().cash) == D(100000) - D("0.5") * 60000
    day = MarketOrderRequest(
        symbol="ETH/USD", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
    )
    err = api_error(lambda: c.submit_order(day))
    assert (err.status_code, err.code) == (422, 42210000)
    err = api_error(lambda: c.submit_order(market("BTC/USD", 0.5, side=OrderSide.SELL)))
    assert (err.status_code, err.code) == (403, 40310000)  # no shorting crypto
    close = c.submit_order(market("BTC/USD", 0.49875, side=OrderSide.SELL))
    wait_status(c, close.id, "filled")
    assert c.get_all_positions() == []
    proceeds = D("0.49875") * 60000 * (1 - D("0.0025"))  # fee taken in USD
    assert D(c.get_account().cash) == D(100000) - 30000 + proceeds


def test_duplicate_client_order_id_is_422_forever(client: Client) -> None:
    c = client("alpha")
    first = c.submit_order(limit("AAPL", 1, 100, client_order_id="once"))
    err = api_error(lambda: c.submit_order(market("AAPL", 1, client_order_id="once")))
    assert (err.status_code, err.code) == (422, 40010001)
    c.cancel_order_by_id(first.id)
    wait_status(c, first.id, "canceled")
    err = api_error(lambda: c.submit_order(market("AAPL", 1, client_order_id="once")))
    assert (err.status_code, err.code) == (422, 40010001)


def test_refusals_unknown_symbol_buying_power_qty_and_shorting(client: Client) -> None:
    alpha, beta, small = client("alpha"), client("beta"), client("small")
    err = api_error(lambda: alpha.submit_order(market("ZZZZ", 1)))
    assert (err.status_code, err.code) == (422, 42210000)
    err = api_error(lambda: small.submit_order(market("SPY", 2)))
    assert (err.status_code, err.code) == (403, 40310000)
    assert "buying power" in err.message
    err = api_error(lambda: beta.submit_order(market("AAPL", 1, side=OrderSide.SELL)))
    assert (err.status_code, err.code) == (403, 40310000)  # beta may not short
    held = alpha.submit_order(market("AAPL", 1))
    wait_status(alpha, held.id, "filled")
    err = api_error(lambda: alpha.submit_order(market("AAPL", 5, side=OrderSide.SELL)))
    assert (err.status_code, err.code) == (403, 40310000)
    assert "insufficient qty" in err.message
    short = alpha.submit_order(market("TSLA", 5, side=OrderSide.SELL))  # alpha may short
    wait_status(alpha, short.id, "filled")
    position = alpha.get_open_position("TSLA")
    assert (position.qty, position.side.value) == ("-5", "short")


def test_bad_keys_get_401_without_code(sim: RunningSimulator) -> None:
    from alpaca.trading.client import TradingClient

    bad = TradingClient("nope", "nope", url_override=sim.url)
    err = api_error(bad.get_account)
    assert err.status_code == 401
    assert err.response.json() == {"message": "unauthorized."}
    with pytest.raises(KeyError):
        err.code  # noqa: B018 -- the SDK's .code needs a "code" field
    wrong_secret = TradingClient(sim.account("alpha").key, "wrong", url_override=sim.url)
    assert api_error(wrong_secret.get_account).status_code == 401


def test_stream_fill_events_carry_execution_details(sim: RunningSimulator, client: Client) -> None:
    c = client("split")  # partial_fill_prob = 1
    with TradeUpdateCollector(sim, "split") as stream:
        order = c.submit_order(market("AMD", 10))
        updates = stream.wait_for(lambda u: any(x.event == "fill" for x in u))
    events = [u.event for u in updates]
    assert events[0] == "new" and events[-1] == "fill"
    assert set(events[1:-1]) == {"partial_fill"} and len(events) >= 3
    fills = updates[1:]
    assert sum(u.qty for u in fills) == 10
    assert [u.position_qty for u in fills] == sorted(u.position_qty for u in fills)
    assert fills[-1].position_qty == 10 and all(u.price == 160 for u in fills)
    assert len({u.execution_id for u in updates}) == len(updates)
    assert all(u.order.id == order.id for u in updates)
    assert [u.order.status.value for u in updates] == (
        ["new"] + ["partially_filled"] * (len(fills) - 1) + ["filled"]
    )
    cumulative = [D(str(u.order.filled_qty)) for u in fills]
    assert cumulative == sorted(cumulative) and cumulative[-1] == 10


def test_limit_orders_fill_when_price_crosses(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    buy = c.submit_order(limit("AAPL", 2, 185))
    wait_status(c, buy.id, "new")
    sim.admin.set_prices({"AAPL": "186"})
    time.sleep(0.05)
    assert c.get_order_by_id(buy.id).status == OrderStatus.NEW
    sim.admin.set_prices({"AAPL": "184.5"})
    assert wait_status(c, buy.id, "filled").filled_avg_price == "184.5"
    sell = c.submit_order(limit("AAPL", 2, 200, side=OrderSide.SELL))
    wait_status(c, sell.id, "new")
    fed = sim.admin.feed_signals([{"symbol": "AAPL", "vwap": {"session": 201.25, "w5m": 1}}])
    assert fed["prices"] == {"AAPL": "201.25"}
    assert wait_status(c, sell.id, "filled").filled_avg_price == "201.25"


def test_two_accounts_never_see_each_other(sim: RunningSimulator, client: Client) -> None:
    alpha, beta = client("alpha"), client("beta")
    with TradeUpdateCollector(sim, "alpha") as sa, TradeUpdateCollector(sim, "beta") as sb:
        a = alpha.submit_order(market("AAPL", 1, client_order_id="shared"))
        b = beta.submit_order(market("MSFT", 2, client_order_id="shared"))  # same id: fine
        sa.wait_for(lambda u: any(x.event == "fill" for x in u))
        sb.wait_for(lambda u: any(x.event == "fill" for x in u))
        time.sleep(0.05)
        assert {u.order.id for u in sa.updates} == {a.id}
        assert {u.order.id for u in sb.updates} == {b.id}
    assert alpha.get_order_by_client_id("shared").id == a.id
    assert beta.get_order_by_client_id("shared").id == b.id
    assert api_error(lambda: beta.get_order_by_id(a.id)).status_code == 404
    assert api_error(lambda: beta.cancel_order_by_id(a.id)).status_code == 404
    all_orders = GetOrdersRequest(status=QueryOrderStatus.ALL)
    assert [o.id for o in alpha.get_orders(all_orders)] == [a.id]
    assert [o.id for o in beta.get_orders(all_orders)] == [b.id]
    assert [p.symbol for p in alpha.get_all_positions()] == ["AAPL"]
    assert [p.symbol for p in beta.get_all_positions()] == ["MSFT"]
    assert D(beta.get_account().cash) == 50000 - 2 * 420
    assert alpha.get_account().id != beta.get_account().id


def test_clock_assets_and_close_position(sim: RunningSimulator, client: Client) -> None:
    c = client("alpha")
    clock = c.get_clock()
    assert clock.is_open and clock.next_close > clock.timestamp
    assets = {a.symbol: a for a in c.get_all_assets()}
    assert {"AAPL", "SPY", "BTC/USD", "ETH/USD", "SOL/USD"} <= set(assets)
    assert assets["BTC/USD"].asset_class.value == "crypto" and not assets["BTC/USD"].shortable
    assert c.get_asset("BTC/USD").exchange.value == "CRYPTO"
    assert c.get_asset("SPY").exchange.value == "ARCA"
    order = c.submit_order(market("GOOGL", 4))
    wait_status(c, order.id, "filled")
    closing = c.close_position("GOOGL")
    assert closing.side == OrderSide.SELL and closing.qty == "4"
    wait_status(c, closing.id, "filled")
    assert c.get_all_positions() == []


def test_notional_fractional_and_close_all(client: Client) -> None:
    c = client("alpha")
    notional = c.submit_order(
        MarketOrderRequest(
            symbol="AAPL", notional=1000, side=OrderSide.BUY, time_in_force=TimeInForce.DAY
        )
    )
    assert notional.notional == "1000" and notional.qty is None
    filled = wait_status(c, notional.id, "filled")
    assert D(filled.filled_qty) == D("5.263157894")  # 1000 / 190, 9 places, rounded down
    fractional = c.submit_order(market("MSFT", 0.5))
    wait_status(c, fractional.id, "filled")
    gtc = MarketOrderRequest(
        symbol="MSFT", qty=0.5, side=OrderSide.BUY, time_in_force=TimeInForce.GTC
    )
    err = api_error(lambda: c.submit_order(gtc))
    assert (err.status_code, err.code) == (422, 42210000)  # fractional orders must be DAY
    c.submit_order(limit("AAPL", 1, 300, side=OrderSide.SELL))  # holds 1 share
    results = c.close_all_positions(cancel_orders=True)
    assert sorted(r.symbol for r in results) == ["AAPL", "MSFT"] and {
        r.status for r in results
    } == {200}
    wait_until(lambda: c.get_all_positions() == [])
    assert D(c.get_account().equity) == D(c.get_account().cash)
