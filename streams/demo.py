"""Synthetic TA signals for the local demo (`make run`) and the benchmarks.

The series are deterministic for a seed: a random-walk price per symbol with RSI and MACD that
swing through the legacy rule's thresholds now and then, so the pipeline produces a steady,
modest flow of decisions rather than one per signal.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from schemas.ta_signal import Bollinger, Ema, Imbalance, Macd, TaSignal, Vwap, Window

DEFAULT_PRICES = {
    "AAPL": 190.0,
    "MSFT": 420.0,
    "NVDA": 120.0,
    "SPY": 560.0,
    "TSLA": 250.0,
    "AMD": 160.0,
    "BTC/USD": 65000.0,
    "ETH/USD": 3200.0,
}


def synthetic_signals(
    symbols: Sequence[str], start: datetime, count: int, seed: int = 7, step_ms: int = 1000
) -> Iterator[TaSignal]:
    """`count` rounds of one signal per symbol, `step_ms` apart in event time."""
    rng = random.Random(seed)
    prices = {s: DEFAULT_PRICES.get(s, 100.0) for s in symbols}
    phases = {s: rng.uniform(0, 2 * math.pi) for s in symbols}
    for i in range(count):
        event_ts = start + timedelta(milliseconds=i * step_ms)
        for symbol in symbols:
            price = prices[symbol] = max(0.01, prices[symbol] * (1 + rng.gauss(0, 0.0008)))
            yield _signal(symbol, price, i, phases[symbol], event_ts, rng)


def _signal(
    symbol: str, price: float, i: int, phase: float, event_ts: datetime, rng: random.Random
) -> TaSignal:
    wave = math.sin(i / 17.0 + phase)
    rsi = 50 + 32 * wave + rng.uniform(-3, 3)
    macd = price * 0.001 * -wave
    signal = macd * 0.5
    spread = price * 0.0002
    return TaSignal(
        ingest_ts=event_ts + timedelta(milliseconds=5),
        event_ts=event_ts,
        symbol=symbol,
        seq=i + 1,
        is_final=True,
        source="demo",
        window=Window(size="PT1S", step="PT1S"),
        macd=Macd(macd=macd, signal=signal, hist=macd - signal),
        ema=Ema(ema12=price * (1 + 0.0005 * wave), ema26=price),
        rsi14=max(0.0, min(100.0, rsi)),
        boll=Bollinger(mid=price, upper=price * 1.01, lower=price * 0.99),
        vwap=Vwap(session=price * (1 - 0.002 * wave), w5m=price),
        imbalance=Imbalance(
            spread=spread,
            bid_px=price - spread / 2,
            ask_px=price + spread / 2,
            bid_sz=rng.randint(1, 500),
            ask_sz=rng.randint(1, 500),
        ),
        price=price,
        version=1,
    )
