"""Position reconciliation over time: broker positions against the positions this system's fills
imply, per account.

implied(symbol) = baseline(symbol) + Σ signed filled quantity of the account's executions
(system and adopted external ones); the baseline is what the broker held beyond those executions
when the account's fill cursor was created (`broker_fill_cursors`). drift = broker - implied. A
drift that lasts `grace` (fills in flight between the two reads are not drift) is reported:
the gauge `torghut_position_drift{account,symbol}`, the lane's health problem `position_drift`,
and, when `TORGHUT_POSITION_DRIFT_SET_REDUCING` is on, the account's trading state set to
`reducing` through `TradingStateSetter` (once per drift episode).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Protocol

from streams.observability.metrics import POSITION_DRIFT
from streams.observability.status import StatusBoard

log = logging.getLogger(__name__)

DRIFT_REASON = "position_drift"


class TradingStateSetter(Protocol):
    """Sets an account's trading state to `reducing` (in the worker: a trading-state command on
    the control topic, `streams.execution.order_guard.ControlTopicTradingState`)."""

    async def set_reducing(self, account: str, reason: str) -> None: ...


def position_drift(
    broker: Mapping[str, Decimal],
    implied: Mapping[str, Decimal],
    baseline: Mapping[str, Decimal],
    tolerance: Decimal = Decimal(0),
) -> dict[str, Decimal]:
    """Symbol → broker - (baseline + implied), for every symbol where they differ by more
    than `tolerance`."""
    drift: dict[str, Decimal] = {}
    for symbol in sorted(set(broker) | set(implied) | set(baseline)):
        expected = baseline.get(symbol, Decimal(0)) + implied.get(symbol, Decimal(0))
        delta = broker.get(symbol, Decimal(0)) - expected
        if abs(delta) > tolerance:
            drift[symbol] = delta
    return drift


@dataclass
class DriftTracker:
    """Per account: since when each symbol has drifted; reports drifts older than `grace`."""

    grace: timedelta
    since: dict[str, dict[str, datetime]] = field(default_factory=dict)
    reported: dict[str, set[str]] = field(default_factory=dict)

    def observe(
        self, account: str, drift: Mapping[str, Decimal], now: datetime
    ) -> dict[str, Decimal]:
        seen = self.since.setdefault(account, {})
        for symbol in list(seen):
            if symbol not in drift:
                del seen[symbol]
        for symbol in drift:
            seen.setdefault(symbol, now)
        return {s: d for s, d in drift.items() if now - seen[s] >= self.grace}

    def newly_reported(self, account: str, confirmed: Mapping[str, Decimal]) -> set[str]:
        """Symbols confirmed now that were not reported before (a new drift episode)."""
        before = self.reported.get(account, set())
        now = set(confirmed)
        self.reported[account] = now
        return now - before

    def forget(self, account: str) -> None:
        self.since.pop(account, None)
        self.reported.pop(account, None)


class DriftReport:
    """Publishes one account's confirmed drift: gauge, lane status, trading state."""

    def __init__(
        self, board: StatusBoard, setter: TradingStateSetter, *, set_reducing: bool
    ) -> None:
        self._board = board
        self._setter = setter
        self._set_reducing = set_reducing
        self._shown: dict[str, set[str]] = {}

    async def publish(self, account: str, confirmed: Mapping[str, Decimal], new: set[str]) -> None:
        shown = self._shown.setdefault(account, set())
        for symbol in shown - set(confirmed):
            with suppress(KeyError):
                POSITION_DRIFT.remove(account, symbol)
        for symbol, delta in confirmed.items():
            POSITION_DRIFT.labels(account=account, symbol=symbol).set(float(delta))
        self._shown[account] = set(confirmed)
        self._board.lane(account).set_position_drift({s: str(d) for s, d in confirmed.items()})
        if not new:
            return
        detail = ", ".join(f"{s} {confirmed[s]:+}" for s in sorted(new))
        log.error(
            "position drift: broker positions differ from this system's fills (%s)",
            detail,
            extra={"account": account, "symbols": sorted(new)},
        )
        if self._set_reducing:
            await self._setter.set_reducing(account, f"{DRIFT_REASON}: {detail}")
