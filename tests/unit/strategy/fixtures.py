"""Builders of TA signals and strategy configs for the strategy tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from schemas.ta_signal import TaSignal
from streams.domain.strategy.model import StrategyConfig

T0 = datetime(2026, 3, 2, 14, 30, 0, 123000, tzinfo=UTC)


def make_signal(
    symbol: str = "AAPL",
    seq: int = 1,
    *,
    at: datetime | None = None,
    price: float | None = 100.0,
    macd: tuple[float, float] | None = (0.5, 0.1),
    rsi: float | None = 55.0,
    ema: tuple[float, float] | None = (100.2, 100.0),
    vwap: float | None = 100.0,
    spread: float | None = None,
    window: str = "PT1S",
) -> TaSignal:
    event_ts = at or T0 + timedelta(seconds=seq)
    data: dict[str, Any] = {
        "ingest_ts": event_ts + timedelta(milliseconds=40),
        "event_ts": event_ts,
        "symbol": symbol,
        "seq": seq,
        "window": {"size": window},
        "rsi14": rsi,
        "price": price,
    }
    if macd is not None:
        data["macd"] = {"macd": macd[0], "signal": macd[1], "hist": macd[0] - macd[1]}
    if ema is not None:
        data["ema"] = {"ema12": ema[0], "ema26": ema[1]}
    if vwap is not None:
        data["vwap"] = {"session": vwap}
    if spread is not None and price is not None:
        half = spread / 2
        data["imbalance"] = {
            "spread": spread,
            "bid_px": price - half,
            "ask_px": price + half,
            "bid_sz": 100,
            "ask_sz": 100,
        }
    return TaSignal.model_validate(data)


def config(
    strategy_id: str,
    strategy_type: str,
    *,
    notional: str = "1000",
    params: dict[str, Any] | None = None,
    **extra: Any,
) -> StrategyConfig:
    return StrategyConfig(
        id=strategy_id,
        strategy_type=strategy_type,
        max_notional_per_trade=Decimal(notional),
        params=params or {},
        **extra,
    )
