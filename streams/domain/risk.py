"""Pre-trade risk: every reason a decision must not become an order (pure).

A rejected decision carries every gate reason that applies, in a fixed order, so that an operator
sees the whole picture at once; sizing reasons (`streams.domain.sizing`) are checked only when the
gate passes (they need the account snapshot, a broker call). `control_reasons` (flags and kill
switches) is re-checked immediately before submission: a switch engaged after planning still wins.

Reasons: trading_disabled, live_trading_disabled, crypto_trading_disabled,
crypto_live_trading_disabled, kill_switch_enabled, flags_unavailable, decision_stale,
strategy_disabled, symbol_not_allowed, ta_stale (TRADING_TA_FRESHNESS_BLOCK_ORDERS), and the
sizing reasons (missing_price,
max_notional_exceeded, shorts_not_allowed, qty_below_minimum, insufficient_buying_power,
max_position_pct_exceeded). Broker answers add broker_unauthorized and broker_rejected:<code>.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from schemas.decision import AccountDecision
from streams.domain.sizing import SizingLimits, is_crypto, position_symbol
from streams.flags import (
    CRYPTO_ENABLED,
    CRYPTO_LIVE_ENABLED,
    KILL_SWITCH,
    LIVE_ENABLED,
    TRADING_ENABLED,
)
from streams.settings import Settings

KILL_SWITCH_REASON = "kill_switch_enabled"
FLAGS_UNAVAILABLE = "flags_unavailable"
STALE = "decision_stale"
TA_STALE = "ta_stale"


class FlagView(Protocol):
    """What risk reads from a feature-flag snapshot (`streams.flags.FlagSnapshot`)."""

    def lane_available(self, account_label: str) -> bool: ...

    def is_on(self, key: str, account_label: str | None = None) -> bool: ...


@dataclass(frozen=True)
class RiskPolicy:
    sizing: SizingLimits
    max_decision_age: timedelta
    symbol_allowlist: frozenset[str]  # position-form symbols; empty = every symbol
    live_permitted: bool  # TRADING_LIVE_ENABLED
    kill_switch_env: bool  # TRADING_KILL_SWITCH_ENABLED

    @classmethod
    def from_settings(cls, settings: Settings) -> RiskPolicy:
        allow = {position_symbol(s.strip()) for s in settings.symbol_allowlist.split(",")}
        return cls(
            sizing=SizingLimits(
                max_notional_per_order=Decimal(str(settings.max_notional_per_order)),
                max_position_pct_equity=Decimal(str(settings.max_position_pct_equity)),
                allow_shorts=settings.allow_shorts,
            ),
            max_decision_age=timedelta(seconds=settings.max_decision_age_seconds),
            symbol_allowlist=frozenset(s for s in allow if s),
            live_permitted=settings.live_enabled,
            kill_switch_env=settings.kill_switch_enabled,
        )


@dataclass(frozen=True)
class LaneContext:
    """The lane-side facts risk needs besides the decision."""

    account_label: str
    live: bool
    flags: FlagView
    control_kill: bool  # a kill switch command on the control topic applies to this lane


def control_reasons(policy: RiskPolicy, lane: LaneContext, symbol: str) -> list[str]:
    """Flags and kill switches; unavailable flags fail safe (blocks new orders)."""
    reasons: list[str] = []
    label, flags = lane.account_label, lane.flags
    if not flags.lane_available(label):
        reasons.append(FLAGS_UNAVAILABLE)
    else:
        crypto = is_crypto(symbol)
        if not flags.is_on(TRADING_ENABLED, label):
            reasons.append("trading_disabled")
        if lane.live and not flags.is_on(LIVE_ENABLED, label):
            reasons.append("live_trading_disabled")
        if crypto and not flags.is_on(CRYPTO_ENABLED, label):
            reasons.append("crypto_trading_disabled")
        if crypto and lane.live and not flags.is_on(CRYPTO_LIVE_ENABLED, label):
            reasons.append("crypto_live_trading_disabled")
    if lane.live and not policy.live_permitted and "live_trading_disabled" not in reasons:
        reasons.append("live_trading_disabled")
    flag_kill = flags.lane_available(label) and flags.is_on(KILL_SWITCH, label)
    if policy.kill_switch_env or lane.control_kill or flag_kill:
        reasons.append(KILL_SWITCH_REASON)
    return reasons


def is_stale(policy: RiskPolicy, decision: AccountDecision, now: datetime, *, live: bool) -> bool:
    """Older than the age guard. A replay (`telemetry.replay_id`, published by `replay` for paper
    accounts only) carries historical event times by design; a paper lane takes it, a live lane
    never exempts anything."""
    if not live and decision.telemetry.get("replay_id"):
        return False
    return now - decision.event_ts > policy.max_decision_age


def gate_reasons(
    policy: RiskPolicy,
    lane: LaneContext,
    decision: AccountDecision,
    *,
    strategy_enabled: bool,
    now: datetime,
    ta_stale: bool = False,
) -> list[str]:
    """Every reason that needs no account snapshot; sizing (`size_order`) comes after."""
    reasons = control_reasons(policy, lane, decision.symbol)
    if is_stale(policy, decision, now, live=lane.live):
        reasons.append(STALE)
    if ta_stale:
        reasons.append(TA_STALE)
    if not strategy_enabled:
        reasons.append("strategy_disabled")
    allow = policy.symbol_allowlist
    if allow and position_symbol(decision.symbol) not in allow:
        reasons.append("symbol_not_allowed")
    return reasons
