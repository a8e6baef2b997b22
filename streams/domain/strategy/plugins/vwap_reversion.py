"""VWAP mean reversion: fade a stretched price back towards its VWAP, when RSI agrees.

Deviation = (last price - VWAP) / VWAP in basis points (the last price is a trade or quote price,
never the VWAP itself). Buy when the price is at least `entry_bps` below VWAP and RSI is at or
under `rsi_oversold`; sell when above and RSI is at or over `rsi_overbought`. A deviation beyond
`max_deviation_bps` is treated as a regime break or bad data (no trade), as is a quoted spread
wider than `max_spread_bps`. With `require_band` the price must also be outside the Bollinger band.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from schemas.decision import Action
from streams.domain.strategy.features import (
    BOLL_LOWER,
    BOLL_UPPER,
    LAST_PRICE,
    RSI14,
    SPREAD,
    VWAP_SESSION,
    VWAP_W5M,
    Features,
)
from streams.domain.strategy.model import Proposal
from streams.domain.strategy.plugins.base import PluginParams, StrategyPlugin, ramp


class VwapReversionParams(PluginParams):
    anchor: Literal["session", "w5m"] = "session"
    entry_bps: float = Field(15.0, gt=0)
    full_bps: float = Field(60.0, gt=0)
    max_deviation_bps: float = Field(300.0, gt=0)
    rsi_oversold: float = Field(40.0, ge=0, le=100)
    rsi_overbought: float = Field(60.0, ge=0, le=100)
    max_spread_bps: float | None = Field(10.0, gt=0)
    require_band: bool = False
    base_confidence: float = Field(0.5, ge=0, le=1)
    max_confidence: float = Field(0.85, ge=0, le=1)

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> Self:
        if not self.entry_bps < self.max_deviation_bps:
            raise ValueError("entry_bps must be below max_deviation_bps")
        if self.base_confidence > self.max_confidence:
            raise ValueError("base_confidence must not exceed max_confidence")
        return self


class VwapReversion(StrategyPlugin[VwapReversionParams]):
    strategy_type: ClassVar[str] = "vwap_reversion"
    version: ClassVar[str] = "1"
    description: ClassVar[str] = "Fade stretched prices back to VWAP, confirmed by RSI."
    params_model: ClassVar[type[PluginParams]] = VwapReversionParams

    @property
    def _anchor(self) -> str:
        return VWAP_SESSION if self.params.anchor == "session" else VWAP_W5M

    def _required_features(self) -> frozenset[str]:
        band = {BOLL_LOWER, BOLL_UPPER} if self.params.require_band else set()
        return frozenset({LAST_PRICE, self._anchor, RSI14, *band})

    def evaluate(self, features: Features) -> Proposal | None:
        p = self.params
        price, vwap = features[LAST_PRICE], features[self._anchor]
        deviation_bps = (price - vwap) / vwap * 10_000
        if abs(deviation_bps) < p.entry_bps or abs(deviation_bps) > p.max_deviation_bps:
            return None
        if self._spread_too_wide(features, price):
            return None
        rsi = features[RSI14]
        if deviation_bps < 0 and rsi <= p.rsi_oversold and self._outside_band(features, Action.buy):
            return self._proposal(Action.buy, -deviation_bps)
        if (
            deviation_bps > 0
            and rsi >= p.rsi_overbought
            and self._outside_band(features, Action.sell)
        ):
            return self._proposal(Action.sell, deviation_bps)
        return None

    def _spread_too_wide(self, features: Features, price: float) -> bool:
        limit, spread = self.params.max_spread_bps, features.get(SPREAD)
        return limit is not None and spread is not None and spread / price * 10_000 > limit

    def _outside_band(self, features: Features, action: Action) -> bool:
        if not self.params.require_band:
            return True
        price = features[LAST_PRICE]
        if action is Action.buy:
            return price <= features[BOLL_LOWER]
        return price >= features[BOLL_UPPER]

    def _proposal(self, action: Action, stretch_bps: float) -> Proposal:
        p = self.params
        strength = ramp(stretch_bps, p.entry_bps, p.full_bps)
        confidence = round(p.base_confidence + (p.max_confidence - p.base_confidence) * strength, 4)
        return Proposal(action, confidence, reason=f"vwap_dev_bps={stretch_bps:.2f}")
