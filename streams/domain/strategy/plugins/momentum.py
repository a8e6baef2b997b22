"""MACD/RSI momentum: trade in the direction of a MACD cross confirmed by RSI and the EMA trend.

The MACD gap is measured in basis points of price so one parameter set fits symbols of any price.
Buy when the gap is above `min_hist_bps`, RSI sits in the momentum band [rsi_buy_min, rsi_buy_max]
(strength, not yet overbought) and, with `require_trend`, EMA12 > EMA26; sell symmetrically.
Confidence grows from `base_confidence` to `max_confidence` as the gap widens to `full_hist_bps`.
"""

from __future__ import annotations

from typing import ClassVar, Self

from pydantic import Field, model_validator

from schemas.decision import Action
from streams.domain.strategy.features import EMA12, EMA26, MACD, MACD_SIGNAL, PRICE, RSI14, Features
from streams.domain.strategy.model import Proposal
from streams.domain.strategy.plugins.base import PluginParams, StrategyPlugin, ramp


class MomentumParams(PluginParams):
    min_hist_bps: float = Field(0.5, ge=0)
    full_hist_bps: float = Field(5.0, gt=0)
    rsi_buy_min: float = Field(50.0, ge=0, le=100)
    rsi_buy_max: float = Field(70.0, ge=0, le=100)
    rsi_sell_min: float = Field(30.0, ge=0, le=100)
    rsi_sell_max: float = Field(50.0, ge=0, le=100)
    require_trend: bool = True
    base_confidence: float = Field(0.5, ge=0, le=1)
    max_confidence: float = Field(0.9, ge=0, le=1)
    size_with_confidence: bool = False

    @model_validator(mode="after")
    def _bands_ordered(self) -> Self:
        if self.rsi_buy_min > self.rsi_buy_max or self.rsi_sell_min > self.rsi_sell_max:
            raise ValueError("RSI bands need min <= max")
        if self.base_confidence > self.max_confidence:
            raise ValueError("base_confidence must not exceed max_confidence")
        return self


class MacdRsiMomentum(StrategyPlugin[MomentumParams]):
    strategy_type: ClassVar[str] = "macd_rsi_momentum"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "MACD cross in bps of price, RSI momentum band, EMA trend filter."
    params_model: ClassVar[type[PluginParams]] = MomentumParams

    def _required_features(self) -> frozenset[str]:
        trend = {EMA12, EMA26} if self.params.require_trend else set()
        return frozenset({MACD, MACD_SIGNAL, RSI14, *trend})

    def evaluate(self, features: Features) -> Proposal | None:
        p = self.params
        gap_bps = (features[MACD] - features[MACD_SIGNAL]) / features[PRICE] * 10_000
        rsi = features[RSI14]
        buy = gap_bps >= p.min_hist_bps and p.rsi_buy_min <= rsi <= p.rsi_buy_max
        if buy and self._trend_agrees(features, Action.buy):
            return self._proposal(Action.buy, gap_bps)
        sell = -gap_bps >= p.min_hist_bps and p.rsi_sell_min <= rsi <= p.rsi_sell_max
        if sell and self._trend_agrees(features, Action.sell):
            return self._proposal(Action.sell, -gap_bps)
        return None

    def _trend_agrees(self, features: Features, action: Action) -> bool:
        if not self.params.require_trend:
            return True
        up = features[EMA12] > features[EMA26]
        down = features[EMA12] < features[EMA26]
        return up if action is Action.buy else down

    def _proposal(self, action: Action, gap_bps: float) -> Proposal:
        p = self.params
        strength = ramp(gap_bps, p.min_hist_bps, p.full_hist_bps)
        confidence = round(p.base_confidence + (p.max_confidence - p.base_confidence) * strength, 4)
        size = confidence if p.size_with_confidence else 1.0
        return Proposal(action, confidence, size=size, reason=f"macd_gap_bps={gap_bps:.2f}")
