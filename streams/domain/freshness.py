"""TA freshness: is the newest TA signal of each symbol class recent enough? Pure, no I/O.

A class (crypto: the symbol contains "/", else equity) is stale when its newest `event_ts` is
older than the SLO, or when no signal of the class has been seen at all. Age is computed at the
time of the question from the last observed `event_ts`, so a checker that stops refreshing (the
ClickHouse query fails) makes the state go stale on its own rather than freeze as fresh.

A worker holds one `FreshnessState` (in its worker context): the freshness timer records into
it, the lanes' risk check asks `blocks_orders(symbol)` (reason `ta_stale`, an input of the lane),
and the status pages include `snapshot()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from schemas.common import iso_millis


class SymbolClass(StrEnum):
    crypto = "crypto"
    equity = "equity"


def symbol_class(symbol: str) -> SymbolClass:
    return SymbolClass.crypto if "/" in symbol else SymbolClass.equity


@dataclass(frozen=True)
class ClassFreshness:
    symbol_class: SymbolClass
    latest_event_ts: datetime | None
    age_seconds: float | None
    stale: bool


def evaluate(
    latest: Mapping[SymbolClass, datetime | None], now: datetime, slo_seconds: float
) -> dict[SymbolClass, ClassFreshness]:
    """Freshness of every class; a class absent from `latest` has no signal and is stale."""
    out: dict[SymbolClass, ClassFreshness] = {}
    for cls in SymbolClass:
        ts = latest.get(cls)
        age = None if ts is None else max(0.0, (now - ts).total_seconds())
        out[cls] = ClassFreshness(cls, ts, age, age is None or age > slo_seconds)
    return out


def _newest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FreshnessState:
    """Latest TA event time per class, as last observed by the freshness checker."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.enabled = False
        self.block_orders = False
        self.slo_seconds = 120.0
        self._latest: dict[SymbolClass, datetime | None] = {}
        self._fresh_symbols: dict[SymbolClass, int] = {}
        self.checked_at: datetime | None = None
        self.error: str | None = None

    def configure(self, *, enabled: bool, slo_seconds: float, block_orders: bool) -> None:
        self.enabled = enabled
        self.slo_seconds = slo_seconds
        self.block_orders = block_orders

    def record(
        self,
        latest: Mapping[SymbolClass, datetime | None],
        checked_at: datetime,
        fresh_symbols: Mapping[SymbolClass, int] | None = None,
    ) -> None:
        # The newest event time seen never goes backwards: the query looks at a recent horizon
        # only, and a class that went quiet keeps its last known time (and grows stale).
        self._latest = {cls: _newest(self._latest.get(cls), latest.get(cls)) for cls in SymbolClass}
        self._fresh_symbols = dict(fresh_symbols or {})
        self.checked_at = checked_at
        self.error = None

    def record_error(self, error: str) -> None:
        """A failed check keeps the last observation: its age keeps growing towards stale."""
        self.error = error

    def classes(self, now: datetime | None = None) -> dict[SymbolClass, ClassFreshness]:
        return evaluate(self._latest, now or _utc_now(), self.slo_seconds)

    def is_stale(self, symbol: str, now: datetime | None = None) -> bool:
        """True when TA for the symbol's class is stale; never stale when the check is off."""
        if not self.enabled:
            return False
        return self.classes(now)[symbol_class(symbol)].stale

    def blocks_orders(self, symbol: str, now: datetime | None = None) -> bool:
        """True when new orders for `symbol` must be refused (`ta_stale`)."""
        return self.block_orders and self.is_stale(symbol, now)

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        """JSON-able view for `/trading/status` and `/trading/health`."""
        view: dict[str, Any] = {
            "enabled": self.enabled,
            "slo_seconds": self.slo_seconds,
            "block_orders": self.block_orders,
            "checked_at": None if self.checked_at is None else iso_millis(self.checked_at),
            "error": self.error,
            "classes": {},
        }
        if not self.enabled:
            return view
        for cls, fr in self.classes(now).items():
            view["classes"][cls.value] = {
                "latest_event_ts": None
                if fr.latest_event_ts is None
                else iso_millis(fr.latest_event_ts),
                "age_seconds": None if fr.age_seconds is None else round(fr.age_seconds, 3),
                "stale": fr.stale,
                "fresh_symbols": self._fresh_symbols.get(cls),
            }
        view["stale"] = any(c["stale"] for c in view["classes"].values())
        return view
