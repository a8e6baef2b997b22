"""Operator commands on the compacted control topic (`torghut.control.v1`).

The topic is compacted by `control_key`: the latest command per (kind, scope) is the state every
worker rebuilds on start, so engaging a kill switch or halting an account survives restarts
without a database.

Kinds:
- `kill_switch` (`engaged`, `mode`): `block` stops new orders; `cancel` also cancels the
  account's open orders; `flatten` also closes its positions. Cancel and flatten are actions,
  executed once per (command, account) by the worker that owns the lane (audited in Postgres).
- `trading_state` (`state`): `active`, `reducing` (only orders that reduce a position) or
  `halted` (no new orders). `engaged` is True for any state but `active`.
"""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.common import AccountLabel, UtcDatetime, utc_now_millis

ALL_ACCOUNTS = "*"


class ControlKind(StrEnum):
    kill_switch = "kill_switch"
    trading_state = "trading_state"


class KillMode(StrEnum):
    """What an engaged kill switch does besides blocking new orders."""

    block = "block"
    cancel = "cancel"  # also cancel the account's open orders
    flatten = "flatten"  # also cancel them and close every position


class TradingState(StrEnum):
    active = "active"
    reducing = "reducing"  # only orders that reduce an existing position
    halted = "halted"  # no new orders

    @property
    def rank(self) -> int:
        """Restrictiveness: the higher wins when account and global scope disagree."""
        return _RANK[self]


_RANK = {TradingState.active: 0, TradingState.reducing: 1, TradingState.halted: 2}


class ControlCommand(BaseModel):
    """A kill switch or trading state for one account (`account`) or every account (None)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: int = 1
    command_id: str = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=64)
    kind: ControlKind = ControlKind.kill_switch
    account: AccountLabel | None = None
    engaged: bool
    mode: KillMode = KillMode.block  # kill_switch only
    state: TradingState | None = None  # trading_state only
    operator: str = Field(min_length=1, max_length=128)
    reason: str = Field(min_length=1, max_length=1024)
    issued_at: UtcDatetime = Field(default_factory=utc_now_millis)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.kind is ControlKind.trading_state:
            if self.state is None:
                raise ValueError("a trading_state command needs a state")
            if self.engaged != (self.state is not TradingState.active):
                raise ValueError("engaged must be True exactly when the state is not active")
        elif self.state is not None:
            raise ValueError("state is only valid on a trading_state command")
        return self

    @property
    def scope(self) -> str:
        """The account label, or `*` for every account."""
        return self.account if self.account is not None else ALL_ACCOUNTS

    def applies_to(self, account_label: str) -> bool:
        return self.account is None or self.account == account_label

    @property
    def acts(self) -> bool:
        """An engaged kill switch that cancels or flattens (an action, not only a block)."""
        return (
            self.kind is ControlKind.kill_switch
            and self.engaged
            and self.mode is not KillMode.block
        )


def trading_state_command(
    state: TradingState, account: str | None, operator: str, reason: str
) -> ControlCommand:
    return ControlCommand(
        kind=ControlKind.trading_state,
        account=account,
        engaged=state is not TradingState.active,
        state=state,
        operator=operator,
        reason=reason,
    )


def control_key(cmd: ControlCommand) -> bytes:
    """Compaction key per kind and scope: `kill_switch:alpha`, `trading_state:*`."""
    return f"{cmd.kind.value}:{cmd.scope}".encode()
