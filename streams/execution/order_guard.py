"""The last-moment checks of one worker's lanes that depend on the order itself: the trading
state (issue #17) and the pre-trade controls. Called by the lane (`LaneEnv.order_refusals`)
immediately before the POST, after every wait, and told of each order sent (`order_sent`).

The pure rules live in `streams.domain.trading_state` and `streams.domain.pretrade`; this holds
their per-account state on this worker and latches a throttled account to `halted` through the
control topic (`latch`), so the halt survives restarts, reaches every worker and names why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

from schemas.control import ControlCommand, TradingState, trading_state_command
from streams.domain import pretrade, trading_state
from streams.domain.ledger import LedgerEntry
from streams.domain.pretrade import AccountActivity, PretradeLimits
from streams.domain.sizing import AccountSnapshot, position_symbol
from streams.domain.trading_state import TradingStateBook

log = logging.getLogger(__name__)

THROTTLE_OPERATOR = "torghut-streams"  # the operator named by commands this system issues


class OrderGuard:
    def __init__(
        self,
        states: TradingStateBook,
        limits: PretradeLimits,
        latch: Callable[[ControlCommand], None] = lambda command: None,
        live_accounts: frozenset[str] = frozenset(),
    ) -> None:
        self.states = states
        self.limits = limits
        self.live_accounts = live_accounts
        self._latch = latch
        self._activity: dict[str, AccountActivity] = {}
        self._prices: dict[str, tuple[Decimal, datetime]] = {}

    def activity(self, label: str) -> AccountActivity:
        return self._activity.setdefault(label, AccountActivity())

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
        # A replay (paper lanes only, like the age guard) carries historical prices by design.
        replay = bool(entry.decision.telemetry.get("replay_id")) and label not in self.live_accounts
        reasons += pretrade.check(
            self.limits,
            activity,
            plan,
            entry.decision_hash,
            now,
            self.reference(plan.symbol),
            collar=not replay,
        )
        if pretrade.ORDER_RATE in reasons:
            self._throttled(label, activity, now)
        return reasons

    def sent(self, label: str, entry: LedgerEntry, now: datetime) -> None:
        if entry.plan is not None:
            self.activity(label).record(entry.plan, entry.decision_hash, now)

    def set_open_orders(self, label: str, count: int, at: datetime) -> None:
        self.activity(label).set_open_orders(count, at)

    def _throttled(self, label: str, activity: AccountActivity, now: datetime) -> None:
        limits = self.limits
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
