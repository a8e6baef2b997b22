"""Fan-out: every aggregated intent becomes one `AccountDecision` per receiving account lane.

Which lanes receive decisions: the account registry's enabled accounts (the registry already
applies `TRADING_MULTI_ACCOUNT_ENABLED`), then the lane flags. A lane whose flags say trading is
disabled gets nothing; an account other than the primary one (`TRADING_ACCOUNT_LABEL`) also needs
`torghut_trading_multi_account_enabled` for its entity. A lane whose flags are *unavailable* still
receives decisions: its own lane fails safe and records a `flags_unavailable` rejection, which keeps
the decision visible instead of losing it on a transient flag-service error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from schemas.decision import AccountDecision
from schemas.ta_signal import TaSignal
from streams.domain.hashing import decision_hash
from streams.domain.strategy.model import AggregatedIntent
from streams.flags.core import MULTI_ACCOUNT_ENABLED, FlagSnapshot


class AccountLike(Protocol):
    @property
    def label(self) -> str: ...

    @property
    def enabled(self) -> bool: ...


def receiving_lanes(
    accounts: Iterable[AccountLike], flags: FlagSnapshot, primary_label: str
) -> tuple[str, ...]:
    """Labels of the lanes that receive decisions now, sorted."""
    labels = {a.label for a in accounts if a.enabled}
    return tuple(sorted(label for label in labels if _receives(label, flags, primary_label)))


def _receives(label: str, flags: FlagSnapshot, primary_label: str) -> bool:
    if not flags.lane_available(label):
        return True  # the lane itself blocks and reports flags_unavailable
    if not flags.lane_enabled(label):
        return False
    return label == primary_label or flags.is_on(MULTI_ACCOUNT_ENABLED, label)


def _price(signal: TaSignal) -> Decimal | None:
    price = signal.sizing_price
    return Decimal(repr(price)) if price is not None else None


def build_decision(
    intent: AggregatedIntent,
    account_label: str,
    signal: TaSignal,
    emitted_at: datetime,
    telemetry: dict[str, Any],
) -> AccountDecision:
    return AccountDecision(
        decision_hash=decision_hash(
            account_label=account_label,
            symbol=intent.symbol,
            timeframe=intent.horizon,
            event_ts=intent.event_ts,
            action=intent.action.value,
        ),
        account_label=account_label,
        strategy_id=intent.strategy_id,
        source_strategy_ids=intent.source_strategy_ids,
        symbol=intent.symbol,
        timeframe=intent.horizon,
        event_ts=intent.event_ts,
        action=intent.action,
        notional=intent.notional,
        confidence=intent.confidence,
        price=_price(signal),
        signal_seq=signal.seq,
        signal_ingest_ts=signal.ingest_ts,
        emitted_at=emitted_at,
        max_position_pct_equity=intent.max_position_pct_equity,
        telemetry=telemetry,
    )


def fan_out(
    intents: Sequence[AggregatedIntent],
    lanes: Sequence[str],
    signal: TaSignal,
    emitted_at: datetime,
    telemetry: dict[str, Any] | None = None,
) -> list[AccountDecision]:
    """Intents x lanes: intents in their (symbol, horizon) order, lanes sorted by label."""
    base = telemetry or {}
    return [
        build_decision(
            intent,
            label,
            signal,
            emitted_at,
            {**base, "conflict": intent.conflict, "reason": intent.reason},
        )
        for intent in intents
        for label in sorted(lanes)
    ]
