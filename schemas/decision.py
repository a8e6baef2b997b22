"""`AccountDecision`: the value on `torghut.trade-decisions.v1`, keyed by `account_label`."""

from __future__ import annotations

from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import AccountLabel, Money, UtcDatetime


class Action(str, Enum):
    buy = "buy"
    sell = "sell"


class AccountDecision(BaseModel):
    """One aggregated trade intent for one account lane.

    `decision_hash` covers only the identity (account, strategy, symbol, timeframe, event time,
    action); sizing and telemetry fields may differ on a replay without changing it.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    decision_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    account_label: AccountLabel
    strategy_id: str = Field(min_length=1)
    source_strategy_ids: tuple[str, ...] = ()
    symbol: str = Field(min_length=1)
    timeframe: str
    event_ts: UtcDatetime
    action: Action
    notional: Money = Field(gt=Decimal(0))
    confidence: float = Field(ge=0, le=1)
    price: Money | None = None
    signal_seq: int = 0
    signal_ingest_ts: UtcDatetime | None = None
    emitted_at: UtcDatetime
    max_position_pct_equity: float | None = None
    telemetry: dict[str, Any] = Field(default_factory=dict)
