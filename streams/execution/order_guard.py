"""The last-moment checks of one worker's lanes that depend on the order itself: the trading
state (issue #17) and the pre-trade controls. Called by the lane (`LaneEnv.order_refusals`)
immediately before the POST, after every wait, and told of each order sent (`order_sent`).

The pure rules live in `streams.domain.trading_state` and `streams.domain.pretrade`; this holds
their per-account state on this worker and latches a throttled account to `halted` through the
control topic (`latch`), so the halt survives restarts, reaches every worker and names why.

Per account: the limits (the settings', with the registry entry's overrides), the recent orders
(rebuilt from Postgres by the start-up reconciliation: `restore`) and the buys placed outside
this system that the order feed showed this worker (`observe_order`), which the buying-power
check holds back until a snapshot requested after they were seen holds them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from schemas.control import ControlCommand, TradingState, trading_state_command
from schemas.decision import Action
from streams.domain import pretrade, trading_state
from streams.domain.ledger import LedgerEntry
from streams.domain.pretrade import AccountActivity, PendingBuy, PretradeLimits, Sent
from streams.domain.sizing import AccountSnapshot, position_symbol
from streams.domain.trade_updates.model import TradeUpdate
from streams.domain.trading_state import TradingStateBook
from streams.persistence.rows import SubmissionRow

log = logging.getLogger(__name__)

THROTTLE_OPERATOR = "torghut-streams"  # the operator named by commands this system issues
NOTHING_HELD = frozenset({"canceled", "expired", "rejected", "replaced"})
SIDES = frozenset(a.value for a in Action)
# The broker's clock may differ from this worker's by up to this much (both NTP-synchronised).
BROKER_CLOCK_MARGIN = timedelta(seconds=5)


class OrderGuard:
    def __init__(
        self,
        states: TradingStateBook,
        limits: PretradeLimits,
        latch: Callable[[ControlCommand], None] = lambda command: None,
        live_accounts: frozenset[str] = frozenset(),
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.states = states
        self.limits = limits  # the settings' limits: every account without an override
        self._account_limits = {
            label: limits.with_overrides(changes)
            for label, changes in (overrides or {}).items()
            if changes
        }
        self.live_accounts = live_accounts
        self._latch = latch
        self._activity: dict[str, AccountActivity] = {}
        self._prices: dict[str, tuple[Decimal, datetime]] = {}
        self._pending: dict[str, dict[str, PendingBuy]] = {}  # label → order id → buy

    def activity(self, label: str) -> AccountActivity:
        return self._activity.setdefault(label, AccountActivity())

    def limits_for(self, label: str) -> PretradeLimits:
        """The account's limits: the settings' with its registry overrides."""
        return self._account_limits.get(label, self.limits)

    def any_limit(self, predicate: Callable[[PretradeLimits], bool]) -> bool:
        """Whether the default or any account's limits satisfy `predicate`."""
        return predicate(self.limits) or any(predicate(x) for x in self._account_limits.values())

    # ---- the windows after a restart or a lane move (start-up reconciliation)
    def restore_since(self, label: str, now: datetime) -> datetime:
        """From when the account's orders matter to its windows: the start of the trading day
        (daily cap) or the rate / duplicate-intent window, whichever is earlier."""
        keep = self.limits_for(label).keep
        return min(pretrade.trading_day_start(now), now - keep)

    def restore(self, label: str, rows: Iterable[SubmissionRow], now: datetime) -> int:
        """Merge the account's orders read from Postgres into its windows; how many."""
        orders = [
            Sent(r.at, r.decision_hash, position_symbol(r.symbol), Action(r.side), r.notional)
            for r in rows
            if r.side in SIDES  # a lane's orders are buys or sells
        ]
        self.activity(label).restore(orders, now, self.limits_for(label).keep)
        return len(orders)

    # ---- buys placed outside this system (the order feed of this worker's accounts)
    def observe_order(self, update: TradeUpdate, now: datetime) -> None:
        """An order event of an account: a buy this worker did not send, seen for the first
        time, is held back from the buying power until a snapshot requested later holds it.

        It counts as placed at `now` (when it was seen), or earlier when the broker's own time
        for it says so: created (or, for a fill, executed) more than `BROKER_CLOCK_MARGIN`
        before a snapshot was requested, the broker held it in that snapshot's buying power
        (an order placed before a restart and filled during it is not counted twice)."""
        order_id = update.order_id
        own = self.activity(update.account_label).day_hashes
        if order_id is None or update.client_order_id in own:
            return
        pending = self._pending.setdefault(update.account_label, {})
        if order_id in pending:
            return
        if update.status in NOTHING_HELD and not update.cumulative_fill:
            return  # closed before it held anything
        notional = buy_notional(update)
        if notional is not None and notional > 0:
            placed = broker_time(update)
            seen = now if placed is None else min(now, placed + BROKER_CLOCK_MARGIN)
            pending[order_id] = PendingBuy(order_id, notional, seen)

    def pending_buys(self, label: str, snapshot: AccountSnapshot | None) -> list[PendingBuy]:
        """The buys placed elsewhere that `snapshot` may not hold (older ones are forgotten)."""
        known = self._pending.get(label)
        if not known:
            return []
        keep = pretrade.unreflected(snapshot, known.values())
        if snapshot is not None and snapshot.requested_at is not None:
            self._pending[label] = {p.order_id: p for p in keep}
        return keep

    # ---- reference prices (latest TA price per symbol)
    def record_price(self, symbol: str, price: Decimal, at: datetime) -> None:
        key = position_symbol(symbol)
        known = self._prices.get(key)
        if known is None or at >= known[1]:
            self._prices[key] = (price, at)

    def reference(self, symbol: str) -> tuple[Decimal, datetime] | None:
        return self._prices.get(position_symbol(symbol))

    # ---- the lane hooks
    def refusals(
        self, label: str, entry: LedgerEntry, snapshot: AccountSnapshot | None, now: datetime
    ) -> list[str]:
        plan = entry.plan
        if plan is None:
            return []
        reasons: list[str] = []
        held = snapshot.holding(plan.symbol).qty if snapshot is not None else Decimal(0)
        state = self.states.effective(label).state
        refused = trading_state.refusal(state, plan.side, plan.qty, held)
        if refused is not None:
            reasons.append(refused)
        activity = self.activity(label)
        limits = self.limits_for(label)
        # A replay (paper lanes only, like the age guard) carries historical prices by design.
        replay = bool(entry.decision.telemetry.get("replay_id")) and label not in self.live_accounts
        reasons += pretrade.check(
            limits,
            activity,
            plan,
            entry.decision_hash,
            now,
            self.reference(plan.symbol),
            collar=not replay,
        )
        short = pretrade.buying_power_reason(plan, snapshot, self.pending_buys(label, snapshot))
        if short is not None:
            reasons.append(short)
        if pretrade.ORDER_RATE in reasons:
            self._throttled(label, activity, now)
        return reasons

    def sent(self, label: str, entry: LedgerEntry, now: datetime) -> None:
        if entry.plan is not None:
            self.activity(label).record(entry.plan, entry.decision_hash, now)

    def set_open_orders(self, label: str, count: int, at: datetime) -> None:
        self.activity(label).set_open_orders(count, at)

    def _throttled(self, label: str, activity: AccountActivity, now: datetime) -> None:
        limits = self.limits_for(label)
        hits = activity.throttle_hit(now, limits.latch_window)
        if limits.latch_hits <= 0 or hits < limits.latch_hits:
            return
        if self.states.effective(label).state is TradingState.halted:
            return
        window = limits.latch_window.total_seconds()
        command = trading_state_command(
            TradingState.halted,
            label,
            THROTTLE_OPERATOR,
            f"order rate throttle: {hits} refusals within {window:g}s; set active to release",
        )
        self.states.apply(command)  # at once here; every worker gets it from the control topic
        activity.throttle_hits.clear()
        log.error(
            "account latched to halted by the order rate throttle",
            extra={"account": label, "hits": hits, "command_id": command.command_id},
        )
        self._latch(command)


class ControlTopicTradingState:
    """Sets an account `reducing` the way an operator would (position drift, issue #17): a
    trading-state command applied here at once and published on the control topic, so every
    worker applies it and it survives restarts. A state already at least as restrictive is
    left alone."""

    def __init__(self, states: TradingStateBook, publish: Callable[[ControlCommand], None]) -> None:
        self._states = states
        self._publish = publish

    async def set_reducing(self, account: str, reason: str) -> None:
        if self._states.effective(account).state is not TradingState.active:
            return
        command = trading_state_command(TradingState.reducing, account, THROTTLE_OPERATOR, reason)
        self._states.apply(command)
        log.error(
            "account set to reducing",
            extra={"account": account, "reason": reason, "command_id": command.command_id},
        )
        self._publish(command)


def buy_notional(update: TradeUpdate) -> Decimal | None:
    """What a buy order event holds back of the buying power: its notional, else its quantity
    at its limit price, else at its fill price; None for a sell, or when the event says
    neither (a market order before its fill: its fill event says it)."""
    order: Mapping[str, Any] = update.raw.get("order") or {}
    if not isinstance(order, Mapping):
        order = {}
    side = str(update.side or order.get("side") or "").lower()
    if side != "buy":
        return None
    notional = _number(order.get("notional"))
    if notional is not None:
        return notional
    qty = _number(order.get("qty")) or update.order_qty
    price = (
        _number(order.get("limit_price"))
        or update.filled_avg_price
        or _number(order.get("filled_avg_price"))
        or update.price
    )
    if qty is None or price is None:
        return None
    return qty * price


def broker_time(update: TradeUpdate) -> datetime | None:
    """The latest the broker can have accepted the order: its `created_at`, else the event's
    own time (a fill comes after the order's acceptance)."""
    order: Any = update.raw.get("order")
    created = order.get("created_at") if isinstance(order, Mapping) else None
    if isinstance(created, str) and created:
        try:
            parsed = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    return update.event_ts


def _number(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() and number > 0 else None
