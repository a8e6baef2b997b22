"""The upstream TA signal (`torghut.ta.TaSignal`, produced by the Flink TA job)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.common import UtcDatetime

_WINDOW_UNITS = {"S": "Sec", "M": "Min", "H": "Hour", "D": "Day"}
# Prices, sizes and volatilities: a negative value has no meaning (MACD, its signal and
# histogram, and the quote spread of a crossed book, can be negative).
_NON_NEGATIVE = frozenset(
    {
        "price",
        "close",
        "ema.ema12",
        "ema.ema26",
        "boll.mid",
        "boll.upper",
        "boll.lower",
        "vwap.session",
        "vwap.w5m",
        "imbalance.bid_px",
        "imbalance.ask_px",
        "imbalance.bid_sz",
        "imbalance.ask_sz",
        "vol_realized.w60s",
    }
)
# RSI is a ratio scaled to 0..100 by definition; strategies compare it with fixed thresholds,
# so an out-of-range value is a broken upstream computation, never a signal.
_RANGES = {"rsi14": (0.0, 100.0)}
_TOP_LEVEL_NUMBERS = ("rsi14", "price", "close")
_PARTS = ("macd", "ema", "boll", "vwap", "imbalance", "vol_realized")


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Window(_Part):
    size: str
    step: str | None = None
    start: str | None = None
    end: str | None = None


class Macd(_Part):
    macd: float
    signal: float
    hist: float


class Ema(_Part):
    ema12: float
    ema26: float


class Bollinger(_Part):
    mid: float
    upper: float
    lower: float


class Vwap(_Part):
    session: float
    w5m: float | None = None


class Imbalance(_Part):
    spread: float
    bid_px: float
    ask_px: float
    # Doubles on the wire (crypto sizes are fractional).
    bid_sz: float
    ask_sz: float


class VolRealized(_Part):
    w60s: float


class TaSignal(BaseModel):
    """One TA signal per symbol per window. Field names follow the Avro schema exactly.

    The model accepts any float (NaN and infinities too) so that every decoder builds it the same
    way; `number_problems()` is the one numeric validity rule, applied by every decoder.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    ingest_ts: UtcDatetime
    event_ts: UtcDatetime
    symbol: str = Field(min_length=1, max_length=32)
    seq: int = Field(ge=0)
    is_final: bool | None = None
    source: str | None = None
    window: Window | None = None
    macd: Macd | None = None
    ema: Ema | None = None
    rsi14: float | None = None
    boll: Bollinger | None = None
    vwap: Vwap | None = None
    imbalance: Imbalance | None = None
    vol_realized: VolRealized | None = None
    version: int = 1
    # Not in the Avro record; JSON producers (and replays from bars) may carry a trade price.
    price: float | None = None
    close: float | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _null_version_is_1(cls, value: Any) -> Any:
        # The Avro union is ["int", "null"] with default 1.
        return 1 if value is None else value

    @property
    def sizing_price(self) -> float | None:
        """Sizing price: price/close, else session VWAP, else 5-minute VWAP, else bid/ask mid."""
        for candidate in (self.price, self.close):
            if candidate is not None and candidate > 0:
                return candidate
        if self.vwap is not None:
            if self.vwap.session > 0:
                return self.vwap.session
            if self.vwap.w5m is not None and self.vwap.w5m > 0:
                return self.vwap.w5m
        if self.imbalance is not None and self.imbalance.bid_px > 0 and self.imbalance.ask_px > 0:
            return (self.imbalance.bid_px + self.imbalance.ask_px) / 2
        return None

    def number_problems(self) -> list[str]:
        """Every numeric field that is NaN, infinite, negative where that has no meaning, or out
        of its range, named with its problem (never its value). Empty for a usable signal."""
        problems: list[str] = []
        for name, value in self._numbers():
            if not math.isfinite(value):
                problems.append(f"{name}: not a finite number")
            elif name in _NON_NEGATIVE and value < 0:
                problems.append(f"{name}: negative")
            elif name in _RANGES and not _RANGES[name][0] <= value <= _RANGES[name][1]:
                low, high = _RANGES[name]
                problems.append(f"{name}: outside {low:g}..{high:g}")
        return problems

    def _numbers(self) -> list[tuple[str, float]]:
        numbers = [(n, v) for n in _TOP_LEVEL_NUMBERS if (v := getattr(self, n)) is not None]
        for part_name in _PARTS:
            part = getattr(self, part_name)
            if part is None:
                continue
            for field in type(part).model_fields:
                value = getattr(part, field)
                if isinstance(value, float):
                    numbers.append((f"{part_name}.{field}", value))
        return numbers

    @property
    def timeframe(self) -> str:
        """Strategy timeframe from the window size: ISO-8601 `PT1S` → `1Sec`, `PT5M` → `5Min`."""
        if self.window is None:
            return "1Sec"
        return timeframe_from_window(self.window.size)

    @property
    def is_crypto(self) -> bool:
        return "/" in self.symbol


def timeframe_from_window(size: str) -> str:
    text = size.upper().removeprefix("P").removeprefix("T")
    if len(text) >= 2 and text[:-1].isdigit() and text[-1] in _WINDOW_UNITS:
        return f"{int(text[:-1])}{_WINDOW_UNITS[text[-1]]}"
    return size


class InvalidSignal(ValueError):
    """A well-formed signal whose values are unusable; `reason` is the dead-letter reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_numbers(sig: TaSignal) -> TaSignal:
    """`sig`, or `InvalidSignal("invalid_number")` naming every bad field."""
    problems = sig.number_problems()
    if problems:
        raise InvalidSignal("invalid_number", "TaSignal: " + "; ".join(problems))
    return sig
