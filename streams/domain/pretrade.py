"""Pre-trade controls per account (pure): the checks SEC 15c3-5 / ESMA RTS 6 ask for.

Each refusal is a persisted rejection reason:
- `max_order_qty_exceeded`: the order's quantity above `TRADING_MAX_ORDER_QTY`
  (the notional cap is `max_notional_exceeded`, `TRADING_MAX_NOTIONAL_PER_ORDER`, in sizing);
- `max_open_orders_exceeded`: the account's open orders (the broker's count at the last
  snapshot plus orders sent since) at `TRADING_MAX_OPEN_ORDERS`;
- `order_rate_throttled`: `TRADING_ORDER_RATE_PER_SECOND` / `_PER_MINUTE` orders already sent;
  `TRADING_THROTTLE_LATCH_HITS` such refusals within `TRADING_THROTTLE_LATCH_WINDOW_SECONDS`
  latch the account to `halted` (the caller publishes it on the control topic);
- `duplicate_intent`: the same symbol and side sent for another decision within
  `TRADING_DUPLICATE_INTENT_SECONDS`;
- `daily_notional_cap_exceeded`: the trading day's notional sent plus this order above
  `TRADING_DAILY_NOTIONAL_CAP`; the trading day is the America/New_York calendar date
  (`trading_day`), the day Alpaca's account day, day orders and day-trade counts follow;
- `price_collar_exceeded` / `price_reference_missing`: the order's price more than
  `TRADING_PRICE_COLLAR_BPS` away from the latest TA price of its symbol, or no TA price younger
  than `TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS`;
- `insufficient_buying_power` (`buying_power_reason`): a buy above the broker's buying power at
  the snapshot minus the orders the snapshot does not hold yet.

Each limit may be overridden per account in the registry (`PretradeLimits.with_overrides`).

`AccountActivity` is what one worker knows of an account's recent orders. When a lane starts
trading on a worker (start-up reconciliation, also after a lane move), it is rebuilt from
Postgres (`AccountActivity.restore`): the orders of the account that reached the broker since
the start of the trading day, so a restart or a lane move never starts a window afresh.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from schemas.decision import Action
from streams.domain.sizing import AccountSnapshot, OrderPlan, position_symbol
from streams.settings import Settings

MAX_ORDER_QTY = "max_order_qty_exceeded"
MAX_OPEN_ORDERS = "max_open_orders_exceeded"
ORDER_RATE = "order_rate_throttled"
DUPLICATE_INTENT = "duplicate_intent"
DAILY_NOTIONAL = "daily_notional_cap_exceeded"
PRICE_COLLAR = "price_collar_exceeded"
PRICE_REFERENCE_MISSING = "price_reference_missing"
INSUFFICIENT_BUYING_POWER = "insufficient_buying_power"  # the same reason sizing gives
TRADING_DAY_ZONE = ZoneInfo("America/New_York")
REASONS = (
    MAX_ORDER_QTY,
    MAX_OPEN_ORDERS,
    ORDER_RATE,
    DUPLICATE_INTENT,
    DAILY_NOTIONAL,
    PRICE_COLLAR,
    PRICE_REFERENCE_MISSING,
)
ZERO = Decimal(0)
BPS = Decimal(10000)


def trading_day(at: datetime) -> date:
    """The trading day of `at`: its America/New_York calendar date (midnight to midnight New
    York time, daylight saving included)."""
    return at.astimezone(TRADING_DAY_ZONE).date()


def trading_day_start(at: datetime) -> datetime:
    """The start of `at`'s trading day (New York midnight), as an aware datetime."""
    return datetime.combine(trading_day(at), time(0), TRADING_DAY_ZONE)


@dataclass(frozen=True)
class PretradeLimits:
    """0 disables a limit."""

    max_order_qty: Decimal = ZERO
    max_open_orders: int = 0
    rate_per_second: int = 0
    rate_per_minute: int = 0
    latch_hits: int = 0
    latch_window: timedelta = timedelta(seconds=60)
    duplicate_intent: timedelta = timedelta(0)
    daily_notional_cap: Decimal = ZERO
    collar_bps: Decimal = ZERO
    reference_max_age: timedelta = timedelta(seconds=300)

    @classmethod
    def from_settings(cls, settings: Settings) -> PretradeLimits:
        return cls(
            max_order_qty=Decimal(str(settings.max_order_qty)),
            max_open_orders=settings.max_open_orders,
            rate_per_second=settings.order_rate_per_second,
            rate_per_minute=settings.order_rate_per_minute,
            latch_hits=settings.throttle_latch_hits,
            latch_window=timedelta(seconds=settings.throttle_latch_window_seconds),
            duplicate_intent=timedelta(seconds=settings.duplicate_intent_seconds),
            daily_notional_cap=Decimal(str(settings.daily_notional_cap)),
            collar_bps=Decimal(str(settings.price_collar_bps)),
            reference_max_age=timedelta(seconds=settings.price_reference_max_age_seconds),
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> PretradeLimits:
        """These limits with an account's overrides (`AccountLimits.overrides()`: settings
        field names; `max_notional_per_order` belongs to sizing and is ignored here)."""
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if name == "max_order_qty":
                changes["max_order_qty"] = Decimal(str(value))
            elif name == "max_open_orders":
                changes["max_open_orders"] = int(value)
            elif name == "order_rate_per_second":
                changes["rate_per_second"] = int(value)
            elif name == "order_rate_per_minute":
                changes["rate_per_minute"] = int(value)
            elif name == "duplicate_intent_seconds":
                changes["duplicate_intent"] = timedelta(seconds=float(value))
            elif name == "daily_notional_cap":
                changes["daily_notional_cap"] = Decimal(str(value))
            elif name == "price_collar_bps":
                changes["collar_bps"] = Decimal(str(value))
        return replace(self, **changes)

    @property
    def keep(self) -> timedelta:
        """How long an order sent matters to the rate and duplicate-intent windows."""
        return max(timedelta(minutes=1), self.duplicate_intent)


@dataclass(frozen=True)
class Sent:
    at: datetime
    decision_hash: str
    symbol: str  # position form
    side: Action
    notional: Decimal


@dataclass
class AccountActivity:
    """One account's orders sent recently, as this worker saw them."""

    sent: deque[Sent] = field(default_factory=deque)
    day: date | None = None
    day_notional: Decimal = ZERO
    day_hashes: set[str] = field(default_factory=set)  # the orders counted in day_notional
    open_at_snapshot: int = 0  # the broker's open orders at the last count
    counted_at: datetime | None = None
    throttle_hits: deque[datetime] = field(default_factory=deque)
    restored_at: datetime | None = None  # rebuilt from Postgres (start-up reconciliation)

    def _trim(self, now: datetime, keep: timedelta) -> None:
        while self.sent and now - self.sent[0].at > keep:
            self.sent.popleft()

    def _count_day(self, decision_hash: str, notional: Decimal, at: datetime) -> None:
        day = trading_day(at)
        if self.day is None or day > self.day:
            self.day, self.day_notional, self.day_hashes = day, ZERO, set()
        if day == self.day and decision_hash not in self.day_hashes:
            self.day_hashes.add(decision_hash)
            self.day_notional += notional

    def spent_today(self, now: datetime) -> Decimal:
        return self.day_notional if self.day == trading_day(now) else ZERO

    def record(self, plan: OrderPlan, decision_hash: str, now: datetime) -> None:
        self._count_day(decision_hash, plan.notional, now)
        self.sent.append(
            Sent(now, decision_hash, position_symbol(plan.symbol), plan.side, plan.notional)
        )

    def restore(self, orders: Iterable[Sent], now: datetime, keep: timedelta) -> None:
        """Merge the account's orders that reached the broker (read from Postgres) into what
        this worker knows: each order counted once (by decision hash) in the trading day's
        notional, and those younger than `keep` in the rate and duplicate-intent windows."""
        known = {s.decision_hash for s in self.sent}
        merged = list(self.sent)
        for order in orders:
            self._count_day(order.decision_hash, order.notional, order.at)
            if order.decision_hash not in known and now - order.at <= keep:
                known.add(order.decision_hash)
                merged.append(order)
        merged.sort(key=lambda s: s.at)
        self.sent = deque(merged)
        self._trim(now, keep)
        self.restored_at = now

    def set_open_orders(self, count: int, at: datetime) -> None:
        self.open_at_snapshot, self.counted_at = count, at

    def open_orders(self) -> int:
        """The broker's open orders at the last count plus the orders sent since."""
        since = [s for s in self.sent if self.counted_at is None or s.at > self.counted_at]
        return self.open_at_snapshot + len(since)

    def throttle_hit(self, now: datetime, window: timedelta) -> int:
        """Record a throttle refusal; the refusals within `window`."""
        self.throttle_hits.append(now)
        while self.throttle_hits and now - self.throttle_hits[0] > window:
            self.throttle_hits.popleft()
        return len(self.throttle_hits)


def collar_reason(
    limits: PretradeLimits,
    price: Decimal,
    reference: tuple[Decimal, datetime] | None,
    now: datetime,
) -> str | None:
    if limits.collar_bps <= ZERO:
        return None
    if reference is None or now - reference[1] > limits.reference_max_age or reference[0] <= 0:
        return PRICE_REFERENCE_MISSING
    ref = reference[0]
    if abs(price - ref) / ref * BPS > limits.collar_bps:
        return PRICE_COLLAR
    return None


def check(
    limits: PretradeLimits,
    activity: AccountActivity,
    plan: OrderPlan,
    decision_hash: str,
    now: datetime,
    reference: tuple[Decimal, datetime] | None = None,
    *,
    collar: bool = True,
) -> list[str]:
    """Every pre-trade reason that applies to sending `plan` now (empty: it may go); `collar`
    False skips the price collar (a replay of history on a paper lane)."""
    reasons: list[str] = []
    activity._trim(now, limits.keep)
    if limits.max_order_qty > ZERO and plan.qty > limits.max_order_qty:
        reasons.append(MAX_ORDER_QTY)
    if limits.max_open_orders > 0 and activity.open_orders() >= limits.max_open_orders:
        reasons.append(MAX_OPEN_ORDERS)
    if _rate_exceeded(limits, activity, now):
        reasons.append(ORDER_RATE)
    if limits.duplicate_intent > timedelta(0) and _duplicate(
        limits, activity, plan, decision_hash, now
    ):
        reasons.append(DUPLICATE_INTENT)
    cap = limits.daily_notional_cap
    if cap > ZERO and activity.spent_today(now) + plan.notional > cap:
        reasons.append(DAILY_NOTIONAL)
    collared = collar_reason(limits, plan.price, reference, now) if collar else None
    if collared is not None:
        reasons.append(collared)
    return reasons


def _rate_exceeded(limits: PretradeLimits, activity: AccountActivity, now: datetime) -> bool:
    for limit, window in (
        (limits.rate_per_second, timedelta(seconds=1)),
        (limits.rate_per_minute, timedelta(minutes=1)),
    ):
        if limit > 0 and sum(1 for s in activity.sent if now - s.at < window) >= limit:
            return True
    return False


def _duplicate(
    limits: PretradeLimits,
    activity: AccountActivity,
    plan: OrderPlan,
    decision_hash: str,
    now: datetime,
) -> bool:
    symbol = position_symbol(plan.symbol)
    return any(
        s.symbol == symbol
        and s.side is plan.side
        and s.decision_hash != decision_hash
        and now - s.at < limits.duplicate_intent
        for s in activity.sent
    )


@dataclass(frozen=True)
class PendingBuy:
    """A buy of the account this worker first saw at `seen_at` that it did not send itself
    (placed at the broker by hand or by another system: seen through the order feed)."""

    order_id: str
    notional: Decimal
    seen_at: datetime


def unreflected(
    snapshot: AccountSnapshot | None, pending: Iterable[PendingBuy]
) -> list[PendingBuy]:
    """The buys `snapshot` may not hold: first seen after it was requested (the broker held
    back every order it had accepted by then). Without a request time, all of them."""
    requested = snapshot.requested_at if snapshot is not None else None
    return [p for p in pending if requested is None or p.seen_at >= requested]


def buying_power_reason(
    plan: OrderPlan, snapshot: AccountSnapshot | None, pending: Iterable[PendingBuy]
) -> str | None:
    """`insufficient_buying_power` when a buy does not fit what is left of the broker's buying
    power: the snapshot's (the broker's value when it was requested, which holds back every
    order open then, minus every order this lane sent since: `AccountSnapshot.after_order`)
    minus the buys placed elsewhere that the snapshot does not hold yet. Sells are not checked.
    """
    if plan.side is not Action.buy or snapshot is None:
        return None
    power = snapshot.crypto_buying_power if plan.crypto else snapshot.buying_power
    held_back = sum((p.notional for p in unreflected(snapshot, pending)), ZERO)
    if plan.notional > power - held_back:
        return INSUFFICIENT_BUYING_POWER
    return None
