"""The upstream TA signal (`torghut.ta.TaSignal`, produced by the Flink TA job)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schemas.common import UtcDatetime

_WINDOW_UNITS = {"S": "Sec", "M": "Min", "H": "Hour", "D": "Day"}


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
    """One TA signal per symbol per window. Field names follow the Avro schema exactly."""

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
