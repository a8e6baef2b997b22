"""Broker state: orders, positions and account balances, plus their Alpaca JSON shapes."""

from __future__ import annotations

import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from .assets import SIM_NAMESPACE, Asset
from .config import AccountConfig
from .formats import PRICE_QUANTUM, fmt_decimal, fmt_ts, opt_decimal, opt_ts

OPEN_STATUSES = frozenset(
    {"pending_new", "accepted", "new", "partially_filled", "pending_cancel", "held"}
)
TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})

BUY = "buy"
SELL = "sell"


@dataclass(slots=True, eq=False)
class Order:
    id: str
    client_order_id: str
    account: str  # account label
    asset: Asset
    side: str
    type: str
    time_in_force: str
    qty: Decimal | None
    notional: Decimal | None
    limit_price: Decimal | None
    extended_hours: bool
    position_intent: str
    created_at: datetime
    status: str = "pending_new"
    updated_at: datetime | None = None
    filled_at: datetime | None = None
    expired_at: datetime | None = None
    canceled_at: datetime | None = None
    failed_at: datetime | None = None
    expires_at: datetime | None = None
    filled_qty: Decimal = Decimal(0)
    filled_value: Decimal = Decimal(0)  # sum of qty * price over executions
    # Buying-power bookkeeping: the part of the order that opens exposure, at a reference price.
    opening_qty: Decimal = Decimal(0)
    ref_price: Decimal = Decimal(0)
    held: Decimal = Decimal(0)  # quantity counted in the account's held_buy/held_sell
    # Matching bookkeeping.
    scheduled: bool = False  # an execution is queued
    in_book: bool = False  # resting, waiting for the price to cross
    book_gen: int = 0  # invalidates stale resting-book heap entries
    cancel_requested: bool = False
    reject: bool = False  # fault switch: reject right after the new event
    fill_plan: deque[Decimal] = field(default_factory=deque)  # planned execution sizes

    @property
    def is_open(self) -> bool:
        return self.status not in TERMINAL_STATUSES

    @property
    def remaining_qty(self) -> Decimal:
        """Unfilled quantity; for notional orders before their fill, 0 (quantity not known yet)."""
        if self.qty is None:
            return Decimal(0)
        return self.qty - self.filled_qty

    @property
    def filled_avg_price(self) -> Decimal | None:
        if self.filled_qty == 0:
            return None
        return (self.filled_value / self.filled_qty).quantize(PRICE_QUANTUM).normalize()

    def reserved_value(self) -> Decimal:
        """Buying power this open order holds back."""
        if not self.is_open:
            return Decimal(0)
        if self.notional is not None:
            return self.notional if self.side == BUY and self.filled_qty == 0 else Decimal(0)
        return min(self.opening_qty, self.remaining_qty) * self.ref_price

    def to_json(self) -> dict[str, Any]:
        updated = self.updated_at or self.created_at
        return {
            "id": self.id,
            "client_order_id": self.client_order_id,
            "created_at": fmt_ts(self.created_at),
            "updated_at": fmt_ts(updated),
            "submitted_at": fmt_ts(self.created_at),
            "filled_at": opt_ts(self.filled_at),
            "expired_at": opt_ts(self.expired_at),
            "canceled_at": opt_ts(self.canceled_at),
            "failed_at": opt_ts(self.failed_at),
            "replaced_at": None,
            "replaced_by": None,
            "replaces": None,
            "asset_id": self.asset.id_str,
            "symbol": self.asset.symbol,
            "asset_class": self.asset.asset_class,
            "notional": opt_decimal(self.notional),
            "qty": opt_decimal(self.qty),
            "filled_qty": fmt_decimal(self.filled_qty),
            "filled_avg_price": opt_decimal(self.filled_avg_price),
            "order_class": "",
            "order_type": self.type,
            "type": self.type,
            "side": self.side,
            "position_intent": self.position_intent,
            "time_in_force": self.time_in_force,
            "limit_price": opt_decimal(self.limit_price),
            "stop_price": None,
            "status": self.status,
            "extended_hours": self.extended_hours,
            "legs": None,
            "trail_percent": None,
            "trail_price": None,
            "hwm": None,
            "subtag": None,
            "source": None,
            "expires_at": opt_ts(self.expires_at),
        }


@dataclass(slots=True, eq=False)
class Position:
    asset: Asset
    qty: Decimal = Decimal(0)  # signed: negative is short
    cost_basis: Decimal = Decimal(0)  # signed, qty * average entry price

    @property
    def avg_entry_price(self) -> Decimal:
        if self.qty == 0:
            return Decimal(0)
        return (self.cost_basis / self.qty).quantize(PRICE_QUANTUM)

    def add(self, delta: Decimal, cost: Decimal) -> None:
        """Apply a signed quantity change bought/sold for ``cost`` (always >= 0) in total.

        Reducing keeps the average entry price; crossing zero closes then opens at the fill price.
        """
        if delta == 0:
            return
        price = cost / abs(delta)
        if self.qty == 0 or (self.qty > 0) == (delta > 0):
            self.cost_basis += cost if delta > 0 else -cost
            self.qty += delta
            return
        if abs(delta) <= abs(self.qty):
            new_qty = self.qty + delta
            self.cost_basis = self.cost_basis * new_qty / self.qty if new_qty != 0 else Decimal(0)
            self.qty = new_qty
            return
        opened = self.qty + delta  # remainder after closing, same sign as delta
        self.qty = opened
        self.cost_basis = opened * price

    def to_json(self, price: Decimal | None, lastday: Decimal | None) -> dict[str, Any]:
        current = price if price is not None else self.avg_entry_price
        previous = lastday if lastday is not None else current
        market_value = self.qty * current
        unrealized = market_value - self.cost_basis
        plpc = unrealized / abs(self.cost_basis) if self.cost_basis != 0 else Decimal(0)
        intraday = self.qty * (current - previous)
        intraday_base = abs(self.qty * previous)
        intraday_pc = intraday / intraday_base if intraday_base != 0 else Decimal(0)
        change = (current - previous) / previous if previous != 0 else Decimal(0)
        q = Decimal("0.0000000001")
        return {
            "asset_id": self.asset.id_str,
            "symbol": self.asset.position_symbol,
            "exchange": self.asset.exchange,
            "asset_class": self.asset.asset_class,
            "asset_marginable": self.asset.marginable and not self.asset.is_crypto,
            "avg_entry_price": fmt_decimal(self.avg_entry_price),
            "qty": fmt_decimal(self.qty),
            "qty_available": fmt_decimal(self.qty),
            "side": "long" if self.qty > 0 else "short",
            "market_value": fmt_decimal(market_value),
            "cost_basis": fmt_decimal(self.cost_basis.quantize(PRICE_QUANTUM)),
            "unrealized_pl": fmt_decimal(unrealized.quantize(PRICE_QUANTUM)),
            "unrealized_plpc": fmt_decimal(plpc.quantize(q)),
            "unrealized_intraday_pl": fmt_decimal(intraday.quantize(PRICE_QUANTUM)),
            "unrealized_intraday_plpc": fmt_decimal(intraday_pc.quantize(q)),
            "current_price": fmt_decimal(current),
            "lastday_price": fmt_decimal(previous),
            "change_today": fmt_decimal(change.quantize(q)),
        }


def _seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


@dataclass(slots=True, eq=False)
class AccountState:
    config: AccountConfig
    created_at: datetime
    seed: int
    cash: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)  # crypto fees paid, valued in USD at the fill price
    reserved: Decimal = Decimal(0)  # sum of reserved_value() over open orders
    orders: dict[str, Order] = field(default_factory=dict)  # by id, in submission order
    order_list: list[Order] = field(default_factory=list)  # submission order, for time ranges
    order_times: list[datetime] = field(default_factory=list)  # parallel to order_list (bisect)
    open_orders: dict[str, Order] = field(default_factory=dict)  # by id, in submission order
    by_client_id: dict[str, Order] = field(default_factory=dict)  # forever, also after cancel
    positions: dict[str, Position] = field(default_factory=dict)  # by order symbol
    held_sell: dict[str, Decimal] = field(default_factory=dict)  # open sell qty per symbol
    held_buy: dict[str, Decimal] = field(default_factory=dict)  # open buy qty per symbol
    rng: random.Random = field(default_factory=random.Random)
    suspend_trade: bool = False  # account configuration: the broker refuses new orders
    activities: list[dict[str, Any]] = field(default_factory=list)  # FILL activities, in order
    opened_on: dict[str, date] = field(default_factory=dict)  # symbol -> day it was last opened
    day_trades: dict[str, date] = field(default_factory=dict)  # order id -> its day-trade day

    def __post_init__(self) -> None:
        self.cash = self.config.cash
        # Seeded per account, so one account's ids and fills do not depend on the others' traffic.
        self.rng = random.Random(f"{self.seed}/{self.config.label}")

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(SIM_NAMESPACE, "account/" + self.config.label)

    @property
    def account_number(self) -> str:
        return "PA" + str(self.id.int % 10**10).zfill(10)

    def new_uuid(self) -> str:
        return _seeded_uuid(self.rng)

    def position_qty(self, symbol: str) -> Decimal:
        pos = self.positions.get(symbol)
        return pos.qty if pos is not None else Decimal(0)


def balances(acct: AccountState, prices: dict[str, Decimal]) -> dict[str, Decimal]:
    """Cash, market values, equity and buying power under the simulator's margin model."""
    long_mv = Decimal(0)
    short_mv = Decimal(0)
    for symbol, pos in acct.positions.items():
        price = prices.get(symbol)
        value = pos.qty * (price if price is not None else pos.avg_entry_price)
        if value >= 0:
            long_mv += value
        else:
            short_mv += value
    equity = acct.cash + long_mv + short_mv
    gross = long_mv - short_mv
    multiplier = acct.config.multiplier
    buying_power = max(Decimal(0), multiplier * equity - gross - acct.reserved)
    cash_buying_power = max(Decimal(0), equity - gross - acct.reserved)
    return {
        "cash": acct.cash,
        "long_market_value": long_mv,
        "short_market_value": short_mv,
        "equity": equity,
        "gross": gross,
        "buying_power": buying_power,
        "non_marginable_buying_power": cash_buying_power,
    }
