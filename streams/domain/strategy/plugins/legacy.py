"""The legacy rule: buy when MACD > signal and RSI < 35, sell when MACD < signal and RSI > 65."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.decision import Action
from streams.domain.strategy.features import MACD, MACD_SIGNAL, RSI14, Features
from streams.domain.strategy.model import Proposal
from streams.domain.strategy.plugins.base import PluginParams, StrategyPlugin


class LegacyParams(PluginParams):
    buy_rsi_below: float = Field(35.0, ge=0, le=100)
    sell_rsi_above: float = Field(65.0, ge=0, le=100)
    confidence: float = Field(0.5, ge=0, le=1)


class LegacyMacdRsi(StrategyPlugin[LegacyParams]):
    strategy_type: ClassVar[str] = "legacy_macd_rsi"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "Legacy MACD/RSI rule (the pre-v3 decision engine)."
    params_model: ClassVar[type[PluginParams]] = LegacyParams

    def _required_features(self) -> frozenset[str]:
        return frozenset({MACD, MACD_SIGNAL, RSI14})

    def evaluate(self, features: Features) -> Proposal | None:
        macd, signal, rsi = features[MACD], features[MACD_SIGNAL], features[RSI14]
        if macd > signal and rsi < self.params.buy_rsi_below:
            return Proposal(Action.buy, self.params.confidence, reason="macd>signal,rsi_low")
        if macd < signal and rsi > self.params.sell_rsi_above:
            return Proposal(Action.sell, self.params.confidence, reason="macd<signal,rsi_high")
        return None
