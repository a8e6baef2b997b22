"""A lane's cursor: the keyset position (event_ts, symbol, seq) of the last decision processed."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from schemas.common import UtcDatetime
from schemas.decision import AccountDecision


def cursor_key(source: str, account_label: str) -> str:
    return f"{source}:{account_label}"


class LaneCursor(BaseModel):
    model_config = ConfigDict(frozen=True)

    event_ts: UtcDatetime
    symbol: str
    seq: int

    @property
    def position(self) -> tuple[datetime, str, int]:
        return (self.event_ts, self.symbol, self.seq)

    @classmethod
    def of(cls, decision: AccountDecision) -> LaneCursor:
        return cls(event_ts=decision.event_ts, symbol=decision.symbol, seq=decision.signal_seq)
