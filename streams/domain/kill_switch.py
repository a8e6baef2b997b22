"""Kill switches from the compacted control topic: the latest command per scope (pure).

A scope is an account label or `*` (every account). A lane is stopped when the latest command of
its own scope or of `*` engages the switch; releasing one scope never releases the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schemas.control import ALL_ACCOUNTS, ControlCommand, ControlKind


def parse_key(key: bytes | None) -> tuple[ControlKind, str] | None:
    """(kind, scope) of a compaction key `<kind>:<scope>` (for tombstones), else None."""
    if not key:
        return None
    kind, sep, scope = key.decode(errors="replace").partition(":")
    if not sep or not scope or kind not in ControlKind.__members__:
        return None
    return ControlKind(kind), scope


def scope_of_key(key: bytes | None) -> str | None:
    """The scope of a compaction key `kill_switch:<scope>` (for tombstones), else None."""
    parsed = parse_key(key)
    if parsed is None or parsed[0] is not ControlKind.kill_switch:
        return None
    return parsed[1]


@dataclass
class KillSwitchBook:
    by_scope: dict[str, ControlCommand] = field(default_factory=dict)

    def apply(self, command: ControlCommand) -> bool:
        """Record `command`; True when it changes what some lane sees."""
        if command.kind is not ControlKind.kill_switch:
            return False
        previous = self.by_scope.get(command.scope)
        self.by_scope[command.scope] = command
        return (
            previous is None
            or previous.engaged != command.engaged
            or (command.engaged and previous.mode != command.mode)
        )

    def forget(self, scope: str) -> bool:
        """A tombstone: the scope has no command any more."""
        return self.by_scope.pop(scope, None) is not None

    def engaged_for(self, account_label: str) -> ControlCommand | None:
        """The command that stops this lane (its own first, then `*`), or None."""
        for scope in (account_label, ALL_ACCOUNTS):
            command = self.by_scope.get(scope)
            if command is not None and command.engaged:
                return command
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            scope: {
                "engaged": c.engaged,
                "mode": c.mode.value,
                "reason": c.reason,
                "operator": c.operator,
                "issued_at": c.issued_at.isoformat(),
                "command_id": c.command_id,
            }
            for scope, c in sorted(self.by_scope.items())
        }
