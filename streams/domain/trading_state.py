"""Trading states per account and globally, from the compacted control topic (pure).

`active` trades normally, `reducing` lets through only orders that reduce an existing position
(never open or grow one, never flip it), `halted` refuses every new order. The latest
`trading_state` command per scope (an account label or `*`) is the state of that scope; a lane's
effective state is the most restrictive of its own scope and `*`. Checked at the last moment
before the broker; every refusal is persisted with its reason (`trading_halted`,
`trading_reducing_not_reducing`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from schemas.control import ALL_ACCOUNTS, ControlCommand, ControlKind, TradingState
from schemas.decision import Action

HALTED = "trading_halted"
REDUCING_NOT_REDUCING = "trading_reducing_not_reducing"
REASONS = (HALTED, REDUCING_NOT_REDUCING)


def reduces_position(side: Action, qty: Decimal, held: Decimal) -> bool:
    """Whether an order of `qty` on `side` only reduces the signed position `held` (< 0 short):
    a sell of at most the long quantity, or a buy of at most the short quantity."""
    if qty <= 0:
        return False
    if side is Action.sell:
        return held > 0 and qty <= held
    return held < 0 and qty <= -held


@dataclass(frozen=True)
class EffectiveState:
    state: TradingState
    command: ControlCommand | None  # the command that set it (None: never set, active)

    def as_dict(self) -> dict[str, object]:
        c = self.command
        return {
            "state": self.state.value,
            "scope": None if c is None else c.scope,
            "reason": None if c is None else c.reason,
            "operator": None if c is None else c.operator,
            "issued_at": None if c is None else c.issued_at.isoformat(),
        }


def refusal(effective: TradingState, side: Action, qty: Decimal, held: Decimal) -> str | None:
    """The reason an order must not be sent under `effective`, or None."""
    if effective is TradingState.halted:
        return HALTED
    if effective is TradingState.reducing and not reduces_position(side, qty, held):
        return REDUCING_NOT_REDUCING
    return None


@dataclass
class TradingStateBook:
    by_scope: dict[str, ControlCommand] = field(default_factory=dict)

    def apply(self, command: ControlCommand) -> bool:
        """Record `command`; True when it changes the state of its scope."""
        if command.kind is not ControlKind.trading_state or command.state is None:
            return False
        previous = self.by_scope.get(command.scope)
        self.by_scope[command.scope] = command
        return previous is None or previous.state != command.state

    def forget(self, scope: str) -> bool:
        """A tombstone: the scope is back to `active`."""
        return self.by_scope.pop(scope, None) is not None

    def effective(self, account_label: str) -> EffectiveState:
        """The most restrictive of the account's own state and the global one (its own wins a
        tie, so status names the account's command)."""
        best = EffectiveState(TradingState.active, None)
        for scope in (account_label, ALL_ACCOUNTS):
            command = self.by_scope.get(scope)
            if command is None or command.state is None:
                continue
            if best.command is None and command.state is TradingState.active:
                best = EffectiveState(TradingState.active, command)
            if command.state.rank > best.state.rank:
                best = EffectiveState(command.state, command)
        return best

    def as_dict(self) -> dict[str, object]:
        return {
            scope: {
                "state": c.state.value if c.state else None,
                "reason": c.reason,
                "operator": c.operator,
                "issued_at": c.issued_at.isoformat(),
                "command_id": c.command_id,
            }
            for scope, c in sorted(self.by_scope.items())
        }
