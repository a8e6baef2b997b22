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
- `daily_notional_cap_exceeded`: the UTC day's notional sent plus this order above
  `TRADING_DAILY_NOTIONAL_CAP`;
- `price_collar_exceeded` / `price_reference_missing`: the order's price more than
  `TRADING_PRICE_COLLAR_BPS` away from the latest TA price of its symbol, or no TA price younger
  than `TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS`.

`AccountActivity` is what one worker knows of an account's recent orders; it is rebuilt from
nothing after a restart (see the README for what that means for the daily cap).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal

from schemas.decision import Action
from streams.domain.sizing import OrderPlan, position_symbol
from streams.settings import Settings

MAX_ORDER_QTY = "max_order_qty_exceeded"
MAX_OPEN_ORDERS = "max_open_orders_exceeded"
ORDER_RATE = "order_rate_throttled"
DUPLICATE_INTENT = "duplicate_intent"
DAILY_NOTIONAL = "daily_notional_cap_exceeded"
PRICE_COLLAR = "price_collar_exceeded"
PRICE_REFERENCE_MISSING = "price_reference_missing"
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
    open_at_snapshot: int = 0  # the broker's open orders at the last count
    counted_at: datetime | None = None
    throttle_hits: deque[datetime] = field(default_factory=deque)

    def _trim(self, now: datetime, keep: timedelta) -> None:
        while self.sent and now - self.sent[0].at > keep:
            self.sent.popleft()

    def record(self, plan: OrderPlan, decision_hash: str, now: datetime) -> None:
        if self.day != now.date():
            self.day, self.day_notional = now.date(), ZERO
        self.day_notional += plan.notional
        self.sent.append(
            Sent(now, decision_hash, position_symbol(plan.symbol), plan.side, plan.notional)
        )

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
    activity._trim(now, max(timedelta(minutes=1), limits.duplicate_intent))
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
    if limits.daily_notional_cap > ZERO:
        spent = activity.day_notional if activity.day == now.date() else ZERO
        if spent + plan.notional > limits.daily_notional_cap:
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
