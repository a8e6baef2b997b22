"""Matching and accounting: orders, fills, positions and balances. Pure logic, no I/O.

Requests mutate state synchronously (validation, acceptance, cancel requests) and queue
*actions*; ``step()``/``run_pending()`` process them and return the trade-update events.
The server calls ``run_pending()`` right after each request, which is what makes acceptance
and fills asynchronous as on Alpaca, while unit tests drive the queue directly.

Determinism: order ids, generated client order ids and partial-fill plans come from a per-account
RNG seeded with ``(seed, label)`` and drawn only when an order is accepted; execution ids derive
from the order id and the transition (UUIDv5), so they do not depend on how requests interleave.
Given the seed, a manual clock and the same sequence of calls, every id, timestamp and event is
identical.
"""

from __future__ import annotations

import heapq
import uuid
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Any

from . import errors
from .assets import Asset, AssetBook
from .clock import NEW_YORK, Clock, next_session_close, next_session_open
from .config import AccountConfig, SimConfig
from .errors import ApiError
from .formats import QTY_QUANTUM, fmt_decimal, fmt_ts, to_decimal
from .state import BUY, SELL, AccountState, Order, Position, balances

ZERO = Decimal(0)
NEG_INF = Decimal("-Infinity")
MAX_CLIENT_ORDER_ID = 128
MAX_AMOUNT = Decimal(10) ** 12  # keeps every quantize() within Decimal's 28-digit precision
ORDER_LIST_MAX = 500
TIME_IN_FORCE = frozenset({"day", "gtc", "opg", "cls", "ioc", "fok"})
UNSUPPORTED_TYPES = frozenset({"stop", "stop_limit", "trailing_stop"})
PENNY = Decimal("0.01")  # equity limit prices at or above $1
SUB_DOLLAR_TICK = Decimal("0.0001")  # below $1
PDT_MIN_EQUITY = Decimal(25000)  # pattern-day-trader protection applies below this equity
PDT_MAX_DAY_TRADES = 3  # a 4th day trade within the window is refused
PDT_WINDOW_DAYS = 5  # business days

# Action kinds in the queue.
ACK = "ack"
EXEC = "exec"
CANCEL = "cancel"
REJECT = "reject"


@dataclass(slots=True)
class TradeEvent:
    """One trade_updates message for one account (the ``data`` part of the stream message)."""

    account: str
    event: str
    timestamp: datetime
    execution_id: str
    order: dict[str, Any]
    price: Decimal | None = None
    qty: Decimal | None = None
    position_qty: Decimal | None = None

    def data(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event": self.event,
            "execution_id": self.execution_id,
            "timestamp": fmt_ts(self.timestamp),
            "order": self.order,
        }
        if self.price is not None and self.qty is not None:
            body["price"] = fmt_decimal(self.price)
            body["qty"] = fmt_decimal(self.qty)
            body["position_qty"] = fmt_decimal(self.position_qty or ZERO)
        return body

    def message(self) -> dict[str, Any]:
        return {"stream": "trade_updates", "data": self.data()}


_BookEntry = tuple[Decimal, int, int, Order]


class _SymbolBook:
    """Resting orders of one symbol: buys by highest limit, sells by lowest, lazy deletion."""

    __slots__ = ("buys", "dead", "sells")

    def __init__(self) -> None:
        self.buys: list[_BookEntry] = []  # key = -limit
        self.sells: list[_BookEntry] = []  # key = limit
        self.dead = 0


class Engine:
    def __init__(self, config: SimConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self.assets = AssetBook(config.assets)
        self.seed = config.seed
        self._account_configs: dict[str, AccountConfig] = {a.label: a for a in config.accounts}
        self.prices: dict[str, Decimal] = {}
        self.lastday: dict[str, Decimal] = {}
        self.accounts: dict[str, AccountState] = {}
        self.by_key: dict[str, AccountState] = {}
        self.partial_fill_prob: dict[str, float] = {}
        self._pending: deque[tuple[str, AccountState, Order]] = deque()
        self._books: dict[str, _SymbolBook] = {}
        self._expiries: list[tuple[datetime, int, Order]] = []
        self._seq = 0
        self._close_cache: tuple[datetime, datetime] | None = None
        self.reset()

    # ------------------------------------------------------------------ lifecycle

    def reset(self, seed: int | None = None) -> None:
        """Back to the configured starting state (accounts added at runtime are kept)."""
        if seed is not None:
            self.seed = seed
        self.clock.reset()
        self.prices = dict(self.config.prices)
        self.lastday = dict(self.config.prices)
        self.accounts = {}
        self.by_key = {}
        self.partial_fill_prob = {}
        for cfg in self._account_configs.values():
            self._install(cfg)
        self._pending.clear()
        self._books = {}
        self._expiries = []
        self._seq = 0

    def _install(self, cfg: AccountConfig) -> AccountState:
        acct = AccountState(config=cfg, created_at=self.clock.now(), seed=self.seed)
        self.accounts[cfg.label] = acct
        self.by_key[cfg.key] = acct
        prob = cfg.partial_fill_prob
        self.partial_fill_prob[cfg.label] = self.config.partial_fill_prob if prob is None else prob
        return acct

    def add_account(self, cfg: AccountConfig) -> AccountState:
        if cfg.label in self.accounts or cfg.key in self.by_key:
            raise ValueError(f"account label {cfg.label!r} or its key already exists")
        self._account_configs[cfg.label] = cfg
        return self._install(cfg)

    def authenticate(self, key: str | None, secret: str | None) -> AccountState | None:
        if not key or secret is None:
            return None
        acct = self.by_key.get(key)
        if acct is None or acct.config.secret != secret:
            return None
        return acct

    # ------------------------------------------------------------------ prices

    def set_prices(self, prices: Mapping[str, object]) -> dict[str, Decimal]:
        """Set last prices; resting limit orders that become marketable are queued for fills."""
        parsed: dict[str, Decimal] = {}
        for raw_symbol, raw_price in prices.items():
            asset = self.assets.find(str(raw_symbol))
            if asset is None:
                raise ValueError(f"unknown symbol {raw_symbol!r}")
            price = to_decimal(raw_price, f"{raw_symbol} price")
            if not 0 < price < MAX_AMOUNT:
                raise ValueError(f"{raw_symbol} price must be > 0 and < 1e12")
            parsed[asset.symbol] = price
        for symbol, price in parsed.items():
            self.prices[symbol] = price
            self._cross(symbol, price)
        return parsed

    def _cross(self, symbol: str, price: Decimal) -> None:
        book = self._books.get(symbol)
        if book is None:
            return
        while book.buys:
            key, _, gen, order = book.buys[0]
            if not order.in_book or order.book_gen != gen:
                heapq.heappop(book.buys)
                continue
            if -key < price:
                break
            heapq.heappop(book.buys)
            order.in_book = False
            self._schedule(order)
        while book.sells:
            key, _, gen, order = book.sells[0]
            if not order.in_book or order.book_gen != gen:
                heapq.heappop(book.sells)
                continue
            if key > price:
                break
            heapq.heappop(book.sells)
            order.in_book = False
            self._schedule(order)

    def _rest(self, order: Order) -> None:
        order.scheduled = False
        order.in_book = True
        order.book_gen += 1
        book = self._books.setdefault(order.asset.symbol, _SymbolBook())
        limit = order.limit_price if order.limit_price is not None else NEG_INF
        self._seq += 1
        if order.side == BUY:
            heapq.heappush(book.buys, (-limit, self._seq, order.book_gen, order))
        else:
            heapq.heappush(book.sells, (limit, self._seq, order.book_gen, order))

    def _unrest(self, order: Order) -> None:
        """Invalidate a resting entry; compact the heaps when dead entries pile up."""
        if not order.in_book:
            return
        order.in_book = False
        order.book_gen += 1
        book = self._books.get(order.asset.symbol)
        if book is None:
            return
        book.dead += 1
        size = len(book.buys) + len(book.sells)
        if book.dead > 256 and book.dead * 2 > size:
            book.buys = [e for e in book.buys if e[3].in_book and e[3].book_gen == e[2]]
            book.sells = [e for e in book.sells if e[3].in_book and e[3].book_gen == e[2]]
            heapq.heapify(book.buys)
            heapq.heapify(book.sells)
            book.dead = 0

    def _schedule(self, order: Order) -> None:
        order.scheduled = True
        self._pending.append((EXEC, self.accounts[order.account], order))

    # ------------------------------------------------------------------ orders

    def submit(self, acct: AccountState, body: Mapping[str, Any], *, reject: bool = False) -> Order:
        """Validate and accept an order (status ``pending_new``); raise ApiError on refusal.

        ``reject`` accepts the order but rejects it right after its ``new`` event (fault switch).
        """
        symbol = body.get("symbol")
        if not isinstance(symbol, str) or not symbol:
            raise errors.invalid("symbol is required")
        side = self._str(body, "side")
        if side not in (BUY, SELL):
            raise errors.invalid(f"invalid side: {side!r}")
        otype = self._str(body, "type") or self._str(body, "order_type")
        if otype in UNSUPPORTED_TYPES:
            raise errors.unprocessable(f"order type {otype} is not supported by the simulator")
        if otype not in ("market", "limit"):
            raise errors.invalid(f"invalid order type: {otype!r}")
        tif = self._str(body, "time_in_force")
        if tif not in TIME_IN_FORCE:
            raise errors.invalid(f"invalid time_in_force: {tif!r}")
        order_class = body.get("order_class") or ""
        if not isinstance(order_class, str) or order_class not in ("", "simple"):
            raise errors.unprocessable(f"order_class {order_class} is not supported")
        if body.get("stop_price") is not None or body.get("trail_price") is not None:
            raise errors.unprocessable("stop and trailing prices are not supported")
        asset = self.assets.find(symbol)
        if asset is None:
            raise errors.unprocessable(f'asset "{symbol}" not found')
        if acct.suspend_trade:
            raise errors.forbidden("new orders are refused: trading is suspended (suspend_trade)")
        if asset.is_crypto and tif not in ("gtc", "ioc"):
            raise errors.unprocessable(f"invalid crypto time_in_force: {tif}")
        if tif in ("opg", "cls"):
            raise errors.unprocessable(f"time_in_force {tif} is not supported by the simulator")

        qty = self._opt_decimal(body, "qty")
        notional = self._opt_decimal(body, "notional")
        if (qty is None) == (notional is None):
            raise errors.invalid("exactly one of qty or notional is required")
        amount = qty if qty is not None else notional
        assert amount is not None
        if amount <= 0:
            raise errors.invalid("qty and notional must be > 0")
        if amount != amount.quantize(QTY_QUANTUM):
            raise errors.invalid("qty and notional accept at most 9 decimal places")
        fractional = qty is not None and qty != qty.to_integral_value()
        if notional is not None or fractional:
            if not asset.fractionable:
                raise errors.unprocessable(f"asset {asset.symbol} is not fractionable")
            if not asset.is_crypto and tif != "day":
                raise errors.unprocessable("fractional orders must be DAY orders")
        if notional is not None and otype != "market":
            raise errors.unprocessable("notional orders must be market orders")

        limit_price = self._opt_decimal(body, "limit_price")
        if otype == "limit":
            if limit_price is None or limit_price <= 0:
                raise errors.invalid("limit_price is required and must be > 0 for limit orders")
        elif limit_price is not None:
            raise errors.invalid("limit_price is only valid for limit orders")
        if limit_price is not None and not asset.is_crypto:
            tick = PENNY if limit_price >= 1 else SUB_DOLLAR_TICK
            if limit_price != limit_price.quantize(tick):
                raise errors.unprocessable(
                    f"invalid limit_price {limit_price}. sub-penny increment does not fulfill "
                    "minimum pricing criteria"
                )
        extended_hours = body.get("extended_hours") is True
        if extended_hours and (otype != "limit" or tif != "day"):
            raise errors.unprocessable("extended hours orders must be DAY limit orders")

        client_order_id = body.get("client_order_id")
        if client_order_id is not None:
            if not isinstance(client_order_id, str) or not client_order_id:
                raise errors.invalid("client_order_id must be a non-empty string")
            if len(client_order_id) > MAX_CLIENT_ORDER_ID:
                raise errors.invalid("client_order_id must be no more than 128 characters")
            if client_order_id in acct.by_client_id:
                raise errors.invalid("client_order_id must be unique")

        price = self.prices.get(asset.symbol)
        if otype == "market" and price is None:
            raise errors.unprocessable(f"no price known for {asset.symbol}")
        ref_price = limit_price if limit_price is not None else price
        assert ref_price is not None
        est_qty = qty if qty is not None else (amount / ref_price).quantize(QTY_QUANTUM, ROUND_DOWN)
        if est_qty <= 0:
            raise errors.invalid("notional is too small for one share increment")
        opening, intent = self._check_exposure(acct, asset, side, est_qty, fractional, notional)
        if self._would_day_trade(acct, asset, side) and self._pdt_protected(acct):
            raise errors.pattern_day_trader()
        required = notional if (notional is not None and side == BUY) else opening * ref_price
        bal = balances(acct, self.prices)
        power = bal["non_marginable_buying_power" if asset.is_crypto else "buying_power"]
        if required > power:
            raise errors.forbidden("insufficient buying power")

        now = self.clock.now()
        order_id = acct.new_uuid()
        if client_order_id is None:
            client_order_id = acct.new_uuid()
        order = Order(
            id=order_id,
            client_order_id=client_order_id,
            account=acct.label,
            asset=asset,
            side=side,
            type=otype,
            time_in_force=tif,
            qty=qty,
            notional=notional,
            limit_price=limit_price,
            extended_hours=extended_hours,
            position_intent=intent,
            created_at=now,
            updated_at=now,
            opening_qty=opening,
            ref_price=ref_price,
        )
        order.fill_plan = deque(self._plan(acct, order, est_qty))
        if tif == "day" and not asset.is_crypto:
            order.expires_at = self._session_close(now)
            self._seq += 1
            heapq.heappush(self._expiries, (order.expires_at, self._seq, order))
        acct.orders[order.id] = order
        acct.order_list.append(order)
        acct.order_times.append(now)
        acct.open_orders[order.id] = order
        acct.by_client_id[client_order_id] = order
        order.reject = reject
        self._set_held(acct, order, est_qty)
        acct.reserved += order.reserved_value()
        self._pending.append((ACK, acct, order))
        return order

    def _session_close(self, now: datetime) -> datetime:
        # next_session_close is constant between two closes: memoise the current one.
        cached = self._close_cache
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[1]
        closes = next_session_close(now)
        self._close_cache = (now, closes)
        return closes

    @staticmethod
    def _str(body: Mapping[str, Any], name: str) -> str | None:
        value = body.get(name)
        return value if isinstance(value, str) else None

    @staticmethod
    def _opt_decimal(body: Mapping[str, Any], name: str) -> Decimal | None:
        raw = body.get(name)
        if raw is None:
            return None
        try:
            value = to_decimal(raw, name)
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None
        if abs(value) >= MAX_AMOUNT:
            raise errors.invalid(f"{name} is too large")
        return value

    def _check_exposure(
        self,
        acct: AccountState,
        asset: Asset,
        side: str,
        qty: Decimal,
        fractional: bool,
        notional: Decimal | None,
    ) -> tuple[Decimal, str]:
        """Return (quantity that opens or grows exposure, position_intent) or raise 403."""
        symbol = asset.symbol
        pos = acct.position_qty(symbol)
        if side == BUY:
            if pos < 0:
                held = acct.held_buy.get(symbol, ZERO)
                cover = min(qty, max(ZERO, -pos - held))
                return qty - cover, "buy_to_close"
            return qty, "buy_to_open"
        available = pos - acct.held_sell.get(symbol, ZERO)
        shown = f"(requested: {fmt_decimal(qty)}, available: {fmt_decimal(max(ZERO, available))})"
        if asset.is_crypto:
            if qty > available:
                raise errors.forbidden(f"insufficient balance for {asset.base_currency} {shown}")
            return ZERO, "sell_to_close"
        if pos > 0:
            if qty > available:
                raise errors.forbidden(f"insufficient qty available for order {shown}")
            return ZERO, "sell_to_close"
        if not acct.config.shorting_allowed:
            raise errors.forbidden("account is not allowed to short")
        if not asset.shortable:
            raise errors.forbidden(f"asset {symbol} is not shortable")
        if fractional or notional is not None:
            raise errors.forbidden("fractional orders cannot be sold short")
        return qty, "sell_to_open"

    def _plan(self, acct: AccountState, order: Order, qty: Decimal) -> list[Decimal]:
        """Execution sizes; drawn at acceptance so fills do not depend on request interleaving."""
        draw = acct.rng.random()
        if order.notional is not None or order.time_in_force == "fok":
            return [qty]
        if draw >= self.partial_fill_prob.get(acct.label, 0.0):
            return [qty]
        integral = qty == qty.to_integral_value() and not order.asset.is_crypto
        unit = Decimal(1) if integral else QTY_QUANTUM
        units = int(qty / unit)
        parts = min(acct.rng.randint(2, self.config.max_partial_fills), units)
        if parts < 2:
            return [qty]
        cuts = sorted(acct.rng.sample(range(1, units), parts - 1))
        bounds = [0, *cuts, units]
        return [(bounds[i + 1] - bounds[i]) * unit for i in range(parts)]

    @staticmethod
    def _set_held(acct: AccountState, order: Order, qty: Decimal) -> None:
        """Set the quantity this order holds (sells: not available to sell again)."""
        held = acct.held_buy if order.side == BUY else acct.held_sell
        symbol = order.asset.symbol
        total = held.get(symbol, ZERO) + qty - order.held
        order.held = qty
        if total == 0:
            held.pop(symbol, None)
        else:
            held[symbol] = total

    def get_order(self, acct: AccountState, order_id: str) -> Order:
        order = acct.orders.get(order_id)
        if order is None:
            raise errors.not_found()
        return order

    def get_by_client_id(self, acct: AccountState, client_order_id: str) -> Order:
        order = acct.by_client_id.get(client_order_id)
        if order is None:
            raise errors.not_found()
        return order

    def list_orders(
        self,
        acct: AccountState,
        *,
        status: str = "open",
        after: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        direction: str = "desc",
        symbols: Iterable[str] | None = None,
        side: str | None = None,
    ) -> list[Order]:
        """Alpaca's GET /v2/orders: ``after``/``until`` are exclusive bounds on submission time."""
        if status not in ("open", "closed", "all"):
            raise errors.invalid(f"invalid status: {status!r}")
        if direction not in ("asc", "desc"):
            raise errors.invalid(f"invalid direction: {direction!r}")
        if not 1 <= limit <= ORDER_LIST_MAX:
            raise errors.invalid(f"limit must be between 1 and {ORDER_LIST_MAX}")
        wanted: set[str] | None = None
        if symbols is not None:
            wanted = set()
            for raw in symbols:
                asset = self.assets.find(raw)
                wanted.add(asset.symbol if asset is not None else raw.upper())
        # Submission order equals timestamp order (the clock never goes back): bisect the range.
        lo = 0 if after is None else bisect_right(acct.order_times, after)
        hi = len(acct.order_list) if until is None else bisect_left(acct.order_times, until)
        candidates: Iterable[Order]
        if status == "open" and len(acct.open_orders) < hi - lo:
            opens = acct.open_orders.values()
            candidates = reversed(opens) if direction == "desc" else opens
        else:
            window = range(hi - 1, lo - 1, -1) if direction == "desc" else range(lo, hi)
            candidates = (acct.order_list[i] for i in window)
        result: list[Order] = []
        for order in candidates:
            if status == "open" and not order.is_open:
                continue
            if status == "closed" and order.is_open:
                continue
            if after is not None and order.created_at <= after:
                continue
            if until is not None and order.created_at >= until:
                continue
            if wanted is not None and order.asset.symbol not in wanted:
                continue
            if side is not None and order.side != side:
                continue
            result.append(order)
            if len(result) >= limit:
                break
        return result

    def request_cancel(self, acct: AccountState, order_id: str) -> Order:
        """Accept a cancel request (HTTP 204); the ``canceled`` event follows from the queue."""
        order = self.get_order(acct, order_id)
        if not order.is_open:
            raise errors.unprocessable(f'order is already in "{order.status}" state')
        if not order.cancel_requested:
            order.cancel_requested = True
            self._pending.append((CANCEL, acct, order))
        return order

    def cancel_all(self, acct: AccountState) -> list[Order]:
        orders = [o for o in acct.open_orders.values() if not o.cancel_requested]
        for order in orders:
            order.cancel_requested = True
            self._pending.append((CANCEL, acct, order))
        return orders

    def close_position(
        self,
        acct: AccountState,
        symbol: str,
        qty: Decimal | None = None,
        percentage: Decimal | None = None,
    ) -> Order:
        """DELETE /v2/positions/{symbol}: a market order for all (or part) of the position."""
        asset = self.assets.find(symbol)
        pos = acct.positions.get(asset.symbol) if asset is not None else None
        if asset is None or pos is None:
            raise ApiError(404, errors.NOT_FOUND, "position does not exist")
        amount = abs(pos.qty)
        if qty is not None:
            amount = qty
        elif percentage is not None:
            amount = (abs(pos.qty) * percentage / 100).quantize(QTY_QUANTUM, ROUND_DOWN)
        body = {
            "symbol": asset.symbol,
            "qty": amount,
            "side": SELL if pos.qty > 0 else BUY,
            "type": "market",
            "time_in_force": "gtc" if asset.is_crypto else "day",
        }
        return self.submit(acct, body)

    # ------------------------------------------------------------------ queue processing

    def has_pending(self) -> bool:
        return bool(self._pending)

    def pending_count(self) -> int:
        return len(self._pending)

    def run_pending(self, max_actions: int | None = None) -> list[TradeEvent]:
        """Process queued actions (and those they queue) up to ``max_actions``."""
        events: list[TradeEvent] = []
        budget = max_actions if max_actions is not None else -1
        while self._pending and budget != 0:
            events.extend(self.step())
            budget -= 1
        return events

    def step(self) -> list[TradeEvent]:
        kind, acct, order = self._pending.popleft()
        if kind == ACK:
            return self._ack(acct, order)
        if kind == EXEC:
            return self._exec(acct, order)
        if kind == CANCEL:
            return self._cancel(acct, order)
        return self._finish(acct, order, "rejected", "rejected")

    def _event(
        self,
        acct: AccountState,
        order: Order,
        name: str,
        *,
        price: Decimal | None = None,
        qty: Decimal | None = None,
    ) -> TradeEvent:
        execution_id = str(uuid.uuid5(uuid.UUID(order.id), f"{name}/{self._event_index(order)}"))
        position_qty = acct.position_qty(order.asset.symbol) if qty is not None else None
        return TradeEvent(
            account=acct.label,
            event=name,
            timestamp=order.updated_at or order.created_at,
            execution_id=execution_id,
            order=order.to_json(),
            price=price,
            qty=qty,
            position_qty=position_qty,
        )

    @staticmethod
    def _event_index(order: Order) -> str:
        # Unique per (order, event): status plus cumulative fill identifies each transition.
        return f"{order.status}/{order.filled_qty}"

    def _ack(self, acct: AccountState, order: Order) -> list[TradeEvent]:
        if order.status != "pending_new":
            return []
        order.status = "new"
        order.updated_at = self.clock.now()
        events = [self._event(acct, order, "new")]
        if order.cancel_requested:
            return events  # its queued cancel follows
        if order.reject:
            self._pending.append((REJECT, acct, order))
            return events
        price = self.prices.get(order.asset.symbol)
        if price is not None and self._marketable(order, price):
            self._schedule(order)
        elif order.time_in_force in ("ioc", "fok"):
            order.cancel_requested = True
            self._pending.append((CANCEL, acct, order))
        else:
            self._rest(order)
        return events

    @staticmethod
    def _marketable(order: Order, price: Decimal) -> bool:
        if order.limit_price is None:
            return True
        if order.side == BUY:
            return price <= order.limit_price
        return price >= order.limit_price

    def _exec(self, acct: AccountState, order: Order) -> list[TradeEvent]:
        if not order.is_open or not order.scheduled:
            return []
        price = self.prices.get(order.asset.symbol)
        if price is None or not self._marketable(order, price):
            if order.time_in_force in ("ioc", "fok"):
                return self._finish(acct, order, "canceled", "canceled")
            self._rest(order)
            return []
        if order.qty is None:
            assert order.notional is not None
            qty = (order.notional / price).quantize(QTY_QUANTUM, ROUND_DOWN)
            order.fill_plan.clear()
        else:
            planned = order.fill_plan.popleft() if order.fill_plan else order.remaining_qty
            qty = min(planned, order.remaining_qty)
        if order.side == SELL and order.notional is not None:
            qty = min(qty, max(ZERO, acct.position_qty(order.asset.symbol)))
        event = self._execute(acct, order, qty, price)
        if order.is_open:
            if order.time_in_force == "ioc":
                order.cancel_requested = True
                self._pending.append((CANCEL, acct, order))
            else:
                self._pending.append((EXEC, acct, order))
        return [event]

    def _execute(
        self, acct: AccountState, order: Order, qty: Decimal, price: Decimal
    ) -> TradeEvent:
        """Apply one execution to cash, position and order; return its fill/partial_fill event."""
        asset = order.asset
        reserved_before = order.reserved_value()
        value = qty * price
        if asset.is_crypto:
            # Crypto fee is taken from the asset received: coins on buys, dollars on sells.
            rate = self.config.crypto_fee_rate
            if order.side == BUY:
                fee_qty = (qty * rate).quantize(QTY_QUANTUM)
                delta = qty - fee_qty
                acct.cash -= value
                acct.fees += fee_qty * price
            else:
                fee = value * rate
                delta = -qty
                acct.cash += value - fee
                acct.fees += fee
        else:
            delta = qty if order.side == BUY else -qty
            acct.cash += -value if order.side == BUY else value
        if not asset.is_crypto:
            self._track_day_trade(acct, order, acct.position_qty(asset.symbol), delta)
        pos = acct.positions.get(asset.symbol)
        if pos is None:
            pos = acct.positions[asset.symbol] = Position(asset=asset)
        pos.add(delta, value)
        if pos.qty == 0:
            del acct.positions[asset.symbol]
        order.filled_qty += qty
        order.filled_value += value
        order.updated_at = self.clock.now()
        done = order.qty is None or order.filled_qty >= order.qty
        if done:
            order.status = "filled"
            order.filled_at = order.updated_at
            self._close(acct, order)
        else:
            order.status = "partially_filled"
        self._set_held(acct, order, ZERO if done else order.remaining_qty)
        acct.reserved += order.reserved_value() - reserved_before
        event = self._event(acct, order, "fill" if done else "partial_fill", price=price, qty=qty)
        acct.activities.append(self._fill_activity(acct, order, event, price, qty))
        return event

    def _fill_activity(
        self, acct: AccountState, order: Order, event: TradeEvent, price: Decimal, qty: Decimal
    ) -> dict[str, Any]:
        """`GET /v2/account/activities/FILL` row of one execution (ids sort by time)."""
        now = event.timestamp
        return {
            "id": f"{now.strftime('%Y%m%d%H%M%S%f')}::{event.execution_id}",
            "activity_type": "FILL",
            "transaction_time": fmt_ts(now),
            "type": "fill" if order.status == "filled" else "partial_fill",
            "price": fmt_decimal(price),
            "qty": fmt_decimal(qty),
            "side": order.side,
            "symbol": order.asset.symbol,
            "leaves_qty": fmt_decimal(order.remaining_qty if order.qty is not None else ZERO),
            "order_id": order.id,
            "client_order_id": order.client_order_id,
            "cum_qty": fmt_decimal(order.filled_qty),
            "order_status": order.status,
            "execution_id": event.execution_id,
        }

    # ---------------------------------------------------------------- pattern day trading
    def _today(self) -> date:
        return self.clock.now().astimezone(NEW_YORK).date()

    def _track_day_trade(
        self, acct: AccountState, order: Order, held: Decimal, delta: Decimal
    ) -> None:
        """Opening (or adding to) a position marks its day; reducing one opened the same day is
        a day trade (counted once per order)."""
        symbol, today = order.asset.symbol, self._today()
        if held == 0 or (held > 0) == (delta > 0):
            acct.opened_on[symbol] = today
        elif acct.opened_on.get(symbol) == today:
            acct.day_trades.setdefault(order.id, today)

    def _recent_day_trades(self, acct: AccountState) -> int:
        """Day trades in the last 5 business days (today included)."""
        days: list[date] = []
        day = self._today()
        while len(days) < PDT_WINDOW_DAYS:
            if day.weekday() < 5:
                days.append(day)
            day -= timedelta(days=1)
        return sum(1 for d in acct.day_trades.values() if d >= days[-1])

    def _would_day_trade(self, acct: AccountState, asset: Asset, side: str) -> bool:
        if asset.is_crypto:
            return False
        held = acct.position_qty(asset.symbol)
        reduces = (held > 0 and side == SELL) or (held < 0 and side == BUY)
        return reduces and acct.opened_on.get(asset.symbol) == self._today()

    def _pdt_protected(self, acct: AccountState) -> bool:
        equity = balances(acct, self.prices)["equity"]
        return equity < PDT_MIN_EQUITY and self._recent_day_trades(acct) >= PDT_MAX_DAY_TRADES

    # ---------------------------------------------------------------- account configuration
    def update_configuration(self, acct: AccountState, body: Mapping[str, Any]) -> None:
        """PATCH /v2/account/configurations: `suspend_trade` is the one setting that acts here."""
        unknown = set(body) - set(self.account_configuration_json(acct))
        if unknown:
            raise errors.invalid(f"unknown configuration: {', '.join(sorted(unknown))}")
        if "suspend_trade" in body:
            value = body["suspend_trade"]
            if not isinstance(value, bool):
                raise errors.invalid("suspend_trade must be a boolean")
            acct.suspend_trade = value

    def activities(
        self,
        acct: AccountState,
        *,
        activity_types: Sequence[str],
        page_token: str | None = None,
        page_size: int = 100,
        direction: str = "desc",
    ) -> list[dict[str, Any]]:
        """Account activities (only FILL exists here), one page after `page_token`."""
        unknown = [t for t in activity_types if t != "FILL"]
        if unknown:
            raise errors.invalid(f"unsupported activity type: {unknown[0]}")
        if direction not in ("asc", "desc"):
            raise errors.invalid("direction must be asc or desc")
        if not 1 <= page_size <= 100:
            raise errors.invalid("page_size must be between 1 and 100")
        rows = acct.activities if direction == "asc" else list(reversed(acct.activities))
        if page_token is not None:
            ids = [row["id"] for row in rows]
            if page_token not in ids:
                raise errors.invalid("invalid page_token")
            rows = rows[ids.index(page_token) + 1 :]
        return rows[:page_size]

    def _close(self, acct: AccountState, order: Order) -> None:
        acct.open_orders.pop(order.id, None)
        self._unrest(order)
        order.scheduled = False
        order.fill_plan.clear()

    def _cancel(self, acct: AccountState, order: Order) -> list[TradeEvent]:
        if not order.is_open:
            # The order filled between the cancel request and its processing.
            if order.status == "filled":
                return [self._event(acct, order, "order_cancel_rejected")]
            return []
        return self._finish(acct, order, "canceled", "canceled")

    def _finish(
        self, acct: AccountState, order: Order, status: str, event: str
    ) -> list[TradeEvent]:
        """Move an open order to a terminal non-fill status and release what it held."""
        if not order.is_open:
            return []
        reserved_before = order.reserved_value()
        now = self.clock.now()
        order.status = status
        order.updated_at = now
        if status == "canceled":
            order.canceled_at = now
        elif status == "expired":
            order.expired_at = now
        elif status == "rejected":
            order.failed_at = now
        self._close(acct, order)
        self._set_held(acct, order, ZERO)
        acct.reserved += order.reserved_value() - reserved_before
        return [self._event(acct, order, event)]

    def expire_due(self) -> list[TradeEvent]:
        """Expire ``day`` orders whose session has closed (called when the clock moves)."""
        now = self.clock.now()
        events: list[TradeEvent] = []
        while self._expiries and self._expiries[0][0] <= now:
            _, _, order = heapq.heappop(self._expiries)
            if order.is_open:
                events.extend(
                    self._finish(self.accounts[order.account], order, "expired", "expired")
                )
        return events

    # ------------------------------------------------------------------ views

    def account_json(self, acct: AccountState) -> dict[str, Any]:
        bal = balances(acct, self.prices)
        multiplier = acct.config.multiplier
        equity = bal["equity"]
        last_equity = acct.config.cash
        return {
            "id": str(acct.id),
            "account_number": acct.account_number,
            "status": "ACTIVE",
            "crypto_status": "ACTIVE",
            "currency": "USD",
            "buying_power": fmt_decimal(bal["buying_power"]),
            "regt_buying_power": fmt_decimal(bal["buying_power"]),
            "daytrading_buying_power": "0",
            "effective_buying_power": fmt_decimal(bal["buying_power"]),
            "non_marginable_buying_power": fmt_decimal(bal["non_marginable_buying_power"]),
            "options_buying_power": fmt_decimal(bal["non_marginable_buying_power"]),
            "bod_dtbp": "0",
            "cash": fmt_decimal(bal["cash"]),
            "accrued_fees": "0",
            "pending_transfer_in": "0",
            "pending_transfer_out": "0",
            "portfolio_value": fmt_decimal(equity),
            "pattern_day_trader": self._recent_day_trades(acct) > PDT_MAX_DAY_TRADES,
            "trading_blocked": False,
            "transfers_blocked": False,
            "account_blocked": False,
            "created_at": fmt_ts(acct.created_at),
            "trade_suspended_by_user": acct.suspend_trade,
            "multiplier": fmt_decimal(multiplier),
            "shorting_enabled": acct.config.shorting_allowed,
            "equity": fmt_decimal(equity),
            "last_equity": fmt_decimal(last_equity),
            "long_market_value": fmt_decimal(bal["long_market_value"]),
            "short_market_value": fmt_decimal(bal["short_market_value"]),
            "position_market_value": fmt_decimal(bal["gross"]),
            "initial_margin": fmt_decimal(bal["gross"] / multiplier),
            "maintenance_margin": fmt_decimal(bal["gross"] / multiplier),
            "last_maintenance_margin": "0",
            "sma": "0",
            "daytrade_count": self._recent_day_trades(acct),
            "balance_asof": acct.created_at.astimezone(NEW_YORK).date().isoformat(),
            "crypto_tier": 1,
            "options_approved_level": 0,
            "options_trading_level": 0,
            "intraday_adjustments": "0",
            "pending_reg_taf_fees": "0",
        }

    def account_configuration_json(self, acct: AccountState) -> dict[str, Any]:
        return {
            "dtbp_check": "entry",
            "fractional_trading": True,
            "max_margin_multiplier": fmt_decimal(acct.config.multiplier),
            "no_shorting": not acct.config.shorting_allowed,
            "pdt_check": "entry",
            "suspend_trade": acct.suspend_trade,
            "trade_confirm_email": "all",
            "ptp_no_exception_entry": False,
            "max_options_trading_level": 0,
        }

    def position_json(self, acct: AccountState, pos: Position) -> dict[str, Any]:
        symbol = pos.asset.symbol
        body = pos.to_json(self.prices.get(symbol), self.lastday.get(symbol))
        held = acct.held_sell.get(symbol, ZERO) if pos.qty > 0 else ZERO
        body["qty_available"] = fmt_decimal(pos.qty - held)
        return body

    def positions_json(self, acct: AccountState) -> list[dict[str, Any]]:
        return [self.position_json(acct, acct.positions[s]) for s in sorted(acct.positions)]

    def find_position(self, acct: AccountState, symbol_or_id: str) -> Position:
        asset = self.assets.find(symbol_or_id)
        pos = acct.positions.get(asset.symbol) if asset is not None else None
        if pos is None:
            raise ApiError(404, errors.NOT_FOUND, "position does not exist")
        return pos

    def clock_json(self) -> dict[str, Any]:
        """Always open: fills are not gated by market hours (see README)."""
        now = self.clock.now()
        return {
            "timestamp": now.astimezone(NEW_YORK).isoformat(),
            "is_open": True,
            "next_open": next_session_open(now).astimezone(NEW_YORK).isoformat(),
            "next_close": next_session_close(now).astimezone(NEW_YORK).isoformat(),
        }
