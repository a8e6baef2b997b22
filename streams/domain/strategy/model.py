"""Strategy configuration and the intents strategies produce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from schemas.decision import Action


class StrategyConfig(BaseModel):
    """One catalogue entry: which plugin, where it runs, how much it may trade."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    strategy_type: str = Field(min_length=1, validation_alias=AliasChoices("strategy_type", "type"))
    version: str = "1"
    enabled: bool = True
    base_timeframe: str = "1Sec"
    universe_symbols: tuple[str, ...] = Field(
        default=(), validation_alias=AliasChoices("universe_symbols", "universe", "symbols")
    )
    max_notional_per_trade: Decimal = Field(default=Decimal("1000"), gt=Decimal(0))
    max_position_pct_equity: float = Field(default=0.25, gt=0, le=1)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) else value

    def applies_to(self, symbol: str, timeframe: str) -> bool:
        """Runs only on its base timeframe, and on its universe when one is given."""
        if timeframe != self.base_timeframe:
            return False
        return not self.universe_symbols or symbol in self.universe_symbols


@dataclass(frozen=True)
class Proposal:
    """What a plugin says about one signal: an action, its confidence, the share of max size."""

    action: Action
    confidence: float
    size: float = 1.0
    reason: str = ""


@dataclass(frozen=True)
class Intent:
    """One strategy's sized proposal for one symbol and horizon at one event time."""

    strategy_id: str
    symbol: str
    horizon: str
    action: Action
    confidence: float
    notional: Decimal
    event_ts: datetime
    max_position_pct_equity: float
    reason: str = ""


@dataclass(frozen=True)
class AggregatedIntent:
    """The resolved intent of one (symbol, horizon): what every account lane receives."""

    symbol: str
    horizon: str
    action: Action
    confidence: float
    notional: Decimal
    strategy_id: str  # the top-ranked winner
    source_strategy_ids: tuple[str, ...]  # every winner, in rank order
    event_ts: datetime
    max_position_pct_equity: float
    conflict: bool = False
    reason: str = ""
