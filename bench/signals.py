"""Benchmark TA signals: a universe of symbols, and a chosen fraction of signals that trade.

The legacy rule (the default runtime) buys when MACD > signal and RSI < 35. A *trigger* signal has
that shape; every other signal is quiet (MACD < signal, RSI 50: no rule fires). Which signals
trigger is drawn from a seeded RNG, so the decision rate is exact on average, bursty like real
flow, and the same on every run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from schemas.codecs import decode_ta_signal, encode_ta_signal_avro
from schemas.ta_signal import TaSignal

BASE_PRICE = 100.0


def universe(size: int) -> list[str]:
    """Synthetic equity symbols (`BN0000`...), added to the simulator's assets by the benchmark."""
    return [f"BN{i:04d}" for i in range(size)]


def price_of(symbol: str) -> float:
    return BASE_PRICE + (sum(symbol.encode()) % 50)


def bench_signal(symbol: str, seq: int, event_ts: datetime, trigger: bool) -> TaSignal:
    price = price_of(symbol)
    macd, signal_line, rsi = (0.3, 0.1, 30.0) if trigger else (0.1, 0.3, 50.0)
    return TaSignal.model_validate(
        {
            "ingest_ts": event_ts,
            "event_ts": event_ts,
            "symbol": symbol,
            "seq": seq,
            "is_final": True,
            "source": "bench",
            "window": {"size": "PT1S", "step": "PT1S"},
            "macd": {"macd": macd, "signal": signal_line, "hist": macd - signal_line},
            "ema": {"ema12": price, "ema26": price},
            "rsi14": rsi,
            "vwap": {"session": price, "w5m": price},
            "imbalance": {
                "spread": 0.02,
                "bid_px": price - 0.01,
                "ask_px": price + 0.01,
                "bid_sz": 100.0,
                "ask_sz": 100.0,
            },
        }
    )


@dataclass
class SignalSource:
    """Round-robin over the universe; per-symbol seq grows by one; `fraction` of signals trigger."""

    symbols: Sequence[str]
    fraction: float
    seed: int = 7

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._seq = dict.fromkeys(self.symbols, 0)
        self._next = 0
        self.triggers = 0
        self.last: tuple[str, int] = ("", 0)  # (symbol, seq) of the latest signal

    def next(self, event_ts: datetime, force: bool = False) -> tuple[bytes, bytes]:
        """The next signal as a Kafka record (key symbol, bare Avro value); `force` makes it
        trigger whatever the draw."""
        symbol = self.symbols[self._next % len(self.symbols)]
        self._next += 1
        self._seq[symbol] += 1
        trigger = self._rng.random() < self.fraction or force
        self.triggers += trigger
        self.last = (symbol, self._seq[symbol])
        sig = bench_signal(symbol, self._seq[symbol], event_ts, trigger)
        return symbol.encode(), encode_ta_signal_avro(sig)


def backlog(source: SignalSource, count: int, start: datetime) -> Iterator[tuple[bytes, bytes]]:
    """`count` signals with event times 1 ms apart (for throughput runs over a backlog). The
    first and the last always trigger, so that their decisions mark the start and the end of
    the run on the output topic."""
    for i in range(count):
        yield source.next(start + timedelta(milliseconds=i), force=i in (0, count - 1))


def decoded(records: Sequence[tuple[bytes, bytes]]) -> list[TaSignal]:
    """The signals as the worker will see them (Avro keeps milliseconds only)."""
    return [decode_ta_signal(value) for _, value in records]
