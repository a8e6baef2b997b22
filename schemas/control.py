"""Operator commands on the compacted control topic (`torghut.control.v1`).

The topic is compacted by `control_key`: the latest command per (kind, scope) is the state every
worker rebuilds on start, so engaging a kill switch survives restarts without a database.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import AccountLabel, UtcDatetime, utc_now_millis

ALL_ACCOUNTS = "*"


class ControlKind(StrEnum):
    kill_switch = "kill_switch"


class ControlCommand(BaseModel):
    """Engage or release a kill switch for one account (`account`) or every account (None)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    command_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    kind: ControlKind = ControlKind.kill_switch
    account: AccountLabel | None = None
    engaged: bool
    operator: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=1024)
    issued_at: UtcDatetime = Field(default_factory=utc_now_millis)

    @property
    def scope(self) -> str:
        """The account label, or `*` for every account."""
        return self.account if self.account is not None else ALL_ACCOUNTS

    def applies_to(self, account_label: str) -> bool:
        return self.account is None or self.account == account_label


def control_key(cmd: ControlCommand) -> bytes:
    """Compaction key per kind and scope: `kill_switch:alpha`, `kill_switch:*`."""
    return f"{cmd.kind.value}:{cmd.scope}".encode()
