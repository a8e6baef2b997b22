"""Pure engine tests: fills, positions, balances, crypto fee, book, expiry, determinism."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.clock import ManualClock
from simulator.config import AccountConfig, SimConfig
from simulator.engine import Engine, TradeEvent
from simulator.errors import ApiError
from simulator.state import AccountState, balances

D = Decimal


def make_engine(**kw: Any) -> tuple[Engine, AccountState]:
    account = AccountConfig(
        label="a",
        key="k",
        secret="s",
        cash=kw.pop("cash", D("100000")),
        shorting_allowed=kw.pop("shorting_allowed", True),
        multiplier=kw.pop("multiplier", D("1")),
    )
    engine = Engine(SimConfig(accounts=(account,), **kw), ManualClock())
    return engine, engine.accounts["a"]


def order(symbol: str, qty: object, side: str = "buy", **kw: Any) -> dict[str, Any]:
    crypto = "/" in symbol
    body = {
        "symbol": symbol,
        "qty": qty,
        "side": side,
        "type": "limit" if "limit_price" in kw else "market",
        "time_in_force": "gtc" if crypto else "day",
    }
    body.update(kw)
    return body


def names(events: list[TradeEvent]) -> list[str]:
    return [e.event for e in events]


def test_market_buy_fills_at_last_price_and_moves_cash() -> None:
    engine, acct = make_engine()
    o = engine.submit(acct, order("AAPL", 10.0))
    assert o.status == "pending_new"
    events = engine.run_pending()
    assert names(events) == ["new", "fill"]
    fill = events[1]
    assert (fill.price, fill.qty, fill.position_qty) == (D("190.00"), D("10.0"), D("10.0"))
    assert fill.order["status"] == "filled" and fill.order["filled_avg_price"] == "190"
    assert acct.cash == D("98100")
    bal = balances(acct, engine.prices)
    assert bal["equity"] == D("100000") and bal["buying_power"] == D("98100")


def test_partial_fills_sum_to_order_qty() -> None:
    engine, acct = make_engine(partial_fill_prob=1.0)
    engine.submit(acct, order("MSFT", 7))
    events = engine.run_pending()
    assert events[0].event == "new" and events[-1].event == "fill"
    assert set(names(events[1:-1])) == {"partial_fill"}
    assert sum(e.qty or 0 for e in events[1:]) == 7
    assert [e.position_qty for e in events[1:]] == sorted(e.position_qty or 0 for e in events[1:])
    assert len({e.execution_id for e in events}) == len(events)


def test_crypto_fee_taken_from_received_asset() -> None:
    engine, acct = make_engine()
    engine.submit(acct, order("BTC/USD", 1))
    fill = engine.run_pending()[-1]
    assert fill.qty == 1 and fill.position_qty == D("0.9975")  # fee paid in BTC
    assert acct.positions["BTC/USD"].qty == D("0.9975")
    assert acct.cash == D("40000")
    engine.submit(acct, order("BTC/USD", "0.9975", "sell"))
    engine.run_pending()
    assert "BTC/USD" not in acct.positions
    assert acct.cash == D("40000") + D("0.9975") * 60000 * (1 - D("0.0025"))  # fee paid in USD
    with pytest.raises(ApiError) as err:
        engine.submit(acct, order("BTC/USD", 1, "sell"))
    assert (err.value.status, err.value.code) == (403, 40310000)
    with pytest.raises(ApiError) as err:
        engine.submit(acct, order("ETH/USD", 1, time_in_force="day"))
    assert (err.value.status, err.value.code) == (422, 42210000)


def test_short_then_buy_through_zero() -> None:
    engine, acct = make_engine()
    engine.submit(acct, order("TSLA", 5, "sell"))
    engine.run_pending()
    pos = acct.positions["TSLA"]
    assert pos.qty == -5 and pos.avg_entry_price == 250 and acct.cash == D("101250")
    bal = balances(acct, engine.prices)
    assert bal["short_market_value"] == D("-1250") and bal["buying_power"] == D("98750")
    engine.set_prices({"TSLA": "240"})
    o = engine.submit(acct, order("TSLA", 8))
    assert o.position_intent == "buy_to_close"
    engine.run_pending()
    assert pos.qty == 3 and pos.avg_entry_price == 240
    assert acct.cash == D("101250") - 8 * 240
    assert balances(acct, engine.prices)["equity"] == D("100050")  # +10/share on the short


def test_refusals() -> None:
    engine, acct = make_engine(cash=D("1000"), shorting_allowed=False)
    cases = [
        (order("XYZ", 1), 422, 42210000),
        (order("SPY", 2), 403, 40310000),  # 1100 > 1000 buying power
        (order("AAPL", 1, "sell"), 403, 40310000),  # shorting not allowed
        (order("AAPL", 0), 422, 40010001),
        (order("AAPL", 1, type="stop"), 422, 42210000),
        (order("AAPL", "1.5", time_in_force="gtc"), 422, 42210000),  # fractional must be day
        (order("AAPL", 1, client_order_id="x" * 129), 422, 40010001),
    ]
    for body, status, code in cases:
        with pytest.raises(ApiError) as err:
            engine.submit(acct, body)
        assert (err.value.status, err.value.code) == (status, code), body
    engine.submit(acct, order("AAPL", 1, client_order_id="dup"))
    with pytest.raises(ApiError) as err:
        engine.submit(acct, order("AAPL", 1, client_order_id="dup"))
    assert (err.value.status, err.value.code) == (422, 40010001)
    engine.run_pending()
    engine.submit(acct, order("AAPL", 1, "sell"))
    with pytest.raises(ApiError) as err:  # the only share is held by the open sell
        engine.submit(acct, order("AAPL", 1, "sell"))
    assert err.value.status == 403 and "insufficient qty" in err.value.message


def test_limit_orders_reserve_rest_and_fill_on_cross() -> None:
    engine, acct = make_engine()
    o = engine.submit(acct, order("AAPL", 10, limit_price="180"))
    assert names(engine.run_pending()) == ["new"]
    assert acct.reserved == D("1800")
    assert balances(acct, engine.prices)["buying_power"] == D("98200")
    engine.set_prices({"AAPL": "185"})
    assert engine.run_pending() == []
    engine.set_prices({"AAPL": "179.5"})
    events = engine.run_pending()
    assert names(events) == ["fill"] and events[0].price == D("179.5")
    assert o.status == "filled" and acct.reserved == 0
    sell = engine.submit(acct, order("AAPL", 10, "sell", limit_price="200"))
    engine.run_pending()
    assert acct.held_sell["AAPL"] == 10
    engine.request_cancel(acct, sell.id)
    assert names(engine.run_pending()) == ["canceled"]
    assert "AAPL" not in acct.held_sell and sell.canceled_at is not None


def test_ioc_and_fok_not_marketable_are_canceled() -> None:
    engine, acct = make_engine()
    engine.submit(acct, order("AAPL", 1, limit_price="100", time_in_force="ioc"))
    engine.submit(acct, order("AAPL", 1, limit_price="100", time_in_force="fok"))
    assert names(engine.run_pending()) == ["new", "new", "canceled", "canceled"]
    assert acct.reserved == 0 and not acct.open_orders


def test_day_orders_expire_at_session_close() -> None:
    engine, acct = make_engine()
    day = engine.submit(acct, order("AAPL", 1, limit_price="100"))
    gtc = engine.submit(acct, order("AAPL", 1, limit_price="100", time_in_force="gtc"))
    engine.run_pending()
    assert engine.expire_due() == []
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    clock.advance(6 * 3600)  # 10:00 -> 16:00 New York
    events = engine.expire_due()
    assert names(events) == ["expired"] and events[0].order["id"] == day.id
    assert day.expired_at is not None and gtc.is_open


def test_list_orders_bounds_and_direction() -> None:
    engine, acct = make_engine()
    clock = engine.clock
    assert isinstance(clock, ManualClock)
    ids = []
    for _ in range(4):
        ids.append(engine.submit(acct, order("AAPL", 1)).id)
        clock.advance(1)
    engine.run_pending()
    times = [acct.orders[i].created_at for i in ids]
    got = engine.list_orders(acct, status="all", after=times[0], until=times[3], direction="asc")
    assert [o.id for o in got] == ids[1:3]  # both bounds exclusive
    assert [o.id for o in engine.list_orders(acct, status="all", limit=2)] == ids[:1:-1]
    assert engine.list_orders(acct, status="open") == []
    with pytest.raises(ApiError):
        engine.list_orders(acct, limit=501)


def test_same_seed_same_ids_and_plans() -> None:
    def run(seed: int) -> list[dict[str, Any]]:
        engine, acct = make_engine(seed=seed, partial_fill_prob=0.5)
        for qty in (5, 7, 3, 9):
            engine.submit(acct, order("NVDA", qty))
        return [e.data() for e in engine.run_pending()]

    assert run(7) == run(7)
    assert run(7) != run(8)


# --------------------------------------------------------------------------- property


order_op = st.tuples(
    st.just("order"),
    st.sampled_from(["AAPL", "TSLA", "BTC/USD"]),
    st.sampled_from(["buy", "sell"]),
    st.integers(min_value=1, max_value=40),
    st.sampled_from([None, "-5", "0", "5"]),  # market, or limit offset from the last price
)
op = st.one_of(  # orders weighted 3x so most examples trade
    order_op,
    order_op,
    order_op,
    st.tuples(
        st.just("price"),
        st.sampled_from(["AAPL", "TSLA", "BTC/USD"]),
        st.integers(min_value=-20, max_value=20),
        st.none(),
        st.none(),
    ),
    st.tuples(
        st.just("cancel"), st.integers(min_value=0, max_value=50), st.none(), st.none(), st.none()
    ),
    st.tuples(st.just("run"), st.none(), st.none(), st.none(), st.none()),
)


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(op, min_size=10, max_size=50), partial=st.sampled_from([0.0, 0.5, 1.0]))
def test_cash_positions_equity_and_buying_power_stay_consistent(
    ops: list[tuple[Any, ...]], partial: float
) -> None:
    engine, acct = make_engine(cash=D("20000"), partial_fill_prob=partial, multiplier=D("2"))
    fee = engine.config.crypto_fee_rate
    cash = D("20000")
    qty: dict[str, Decimal] = {}
    orders: list[str] = []

    def account_for(events: list[TradeEvent]) -> None:
        nonlocal cash
        for e in events:
            if e.price is None or e.qty is None:
                continue
            symbol, side = e.order["symbol"], e.order["side"]
            value = e.price * e.qty
            if "/" in symbol:
                delta = (
                    e.qty - (e.qty * fee).quantize(D("0.000000001")) if side == "buy" else -e.qty
                )
                cash += -value if side == "buy" else value * (1 - fee)
            else:
                delta = e.qty if side == "buy" else -e.qty
                cash += -value if side == "buy" else value
            qty[symbol] = qty.get(symbol, D(0)) + delta
            assert e.position_qty == qty[symbol]

    for kind, a, b, c, d in ops:
        if kind == "order":
            body = order(a, D(c) / 100 if "/" in a else c, b)
            if d is not None:
                body.update(type="limit", limit_price=str(engine.prices[a] + D(d)))
            try:
                orders.append(engine.submit(acct, body).id)
            except ApiError as exc:
                assert exc.status in (403, 422)
        elif kind == "price":
            engine.set_prices({a: str(max(D(1), engine.prices[a] + b))})
        elif kind == "cancel" and orders:
            try:
                engine.request_cancel(acct, orders[a % len(orders)])
            except ApiError as exc:
                assert exc.status == 422
        else:
            account_for(engine.run_pending())
    account_for(engine.run_pending())

    assert acct.cash == cash
    assert {s: p.qty for s, p in acct.positions.items()} == {s: q for s, q in qty.items() if q}
    for symbol, q in qty.items():
        assert q >= 0 or "/" not in symbol  # crypto never short
    bal = balances(acct, engine.prices)
    marked = sum((q * engine.prices[s] for s, q in qty.items()), D(0))
    assert bal["equity"] == cash + marked
    gross = sum((abs(q) * engine.prices[s] for s, q in qty.items()), D(0))
    assert acct.reserved == sum((o.reserved_value() for o in acct.open_orders.values()), D(0))
    assert bal["buying_power"] == max(D(0), 2 * bal["equity"] - gross - acct.reserved)
    for symbol in set(acct.held_sell) | {o.asset.symbol for o in acct.open_orders.values()}:
        open_sells = sum(
            (
                o.remaining_qty
                for o in acct.open_orders.values()
                if o.side == "sell" and o.asset.symbol == symbol
            ),
            D(0),
        )
        assert acct.held_sell.get(symbol, D(0)) == open_sells
    assert all(o.is_open for o in acct.open_orders.values())
    assert not engine.has_pending()


def test_market_hours_helpers() -> None:
    from simulator.clock import next_session_close, next_session_open

    clock = ManualClock()
    friday_late = clock.now() + timedelta(days=4, hours=7)  # Friday 17:00 New York
    assert next_session_close(friday_late).weekday() == 0
    assert next_session_open(friday_late).weekday() == 0


json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**15), 10**15)
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["AAPL", "BTC/USD", "buy", "sell", "market", "limit", "day", "gtc", "ioc"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
fields = st.sampled_from(
    [
        "symbol",
        "qty",
        "notional",
        "side",
        "type",
        "time_in_force",
        "limit_price",
        "client_order_id",
        "order_class",
        "extended_hours",
        "stop_price",
    ]
)


@settings(max_examples=120, deadline=None)
@given(body=st.dictionaries(fields, json_value, max_size=8))
def test_any_request_body_is_accepted_or_refused_with_an_api_error(body: dict[str, Any]) -> None:
    engine, acct = make_engine()
    base = order("AAPL", 1)
    base.update(body)
    try:
        engine.submit(acct, base)
    except ApiError as exc:
        assert exc.status in (400, 403, 422) and exc.code is not None
    engine.run_pending()
