"""Named numeric features of a TA signal, the only input a strategy plugin sees."""

from __future__ import annotations

import math
from collections.abc import Mapping

from schemas.ta_signal import TaSignal

Features = Mapping[str, float]

PRICE = "price"  # sizing price: price/close, else session VWAP, else 5m VWAP, else mid
LAST_PRICE = "last_price"  # a traded/quoted price only (never a VWAP): price/close, else mid
MACD = "macd"
MACD_SIGNAL = "macd_signal"
MACD_HIST = "macd_hist"
EMA12 = "ema12"
EMA26 = "ema26"
RSI14 = "rsi14"
BOLL_MID = "boll_mid"
BOLL_UPPER = "boll_upper"
BOLL_LOWER = "boll_lower"
VWAP_SESSION = "vwap_session"
VWAP_W5M = "vwap_w5m"
SPREAD = "spread"
BID_PX = "bid_px"
ASK_PX = "ask_px"
VOL_REALIZED_W60S = "vol_realized_w60s"


def _last_price(signal: TaSignal) -> float | None:
    for candidate in (signal.price, signal.close):
        if candidate is not None and candidate > 0:
            return candidate
    book = signal.imbalance
    if book is not None and book.bid_px > 0 and book.ask_px > 0:
        return (book.bid_px + book.ask_px) / 2
    return None


def _raw_features(signal: TaSignal) -> dict[str, float | None]:
    macd, ema, boll, vwap, book = (
        signal.macd,
        signal.ema,
        signal.boll,
        signal.vwap,
        signal.imbalance,
    )
    return {
        PRICE: signal.sizing_price,
        LAST_PRICE: _last_price(signal),
        MACD: macd.macd if macd else None,
        MACD_SIGNAL: macd.signal if macd else None,
        MACD_HIST: macd.hist if macd else None,
        EMA12: ema.ema12 if ema else None,
        EMA26: ema.ema26 if ema else None,
        RSI14: signal.rsi14,
        BOLL_MID: boll.mid if boll else None,
        BOLL_UPPER: boll.upper if boll else None,
        BOLL_LOWER: boll.lower if boll else None,
        VWAP_SESSION: vwap.session if vwap and vwap.session > 0 else None,
        VWAP_W5M: vwap.w5m if vwap and vwap.w5m and vwap.w5m > 0 else None,
        SPREAD: book.spread if book else None,
        BID_PX: book.bid_px if book else None,
        ASK_PX: book.ask_px if book else None,
        VOL_REALIZED_W60S: signal.vol_realized.w60s if signal.vol_realized else None,
    }


def extract_features(signal: TaSignal) -> dict[str, float]:
    """Present, finite features only: an absent or NaN value is simply missing (fail closed)."""
    return {
        name: float(value)
        for name, value in _raw_features(signal).items()
        if value is not None and math.isfinite(value)
    }
