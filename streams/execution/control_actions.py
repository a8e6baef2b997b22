"""Kill-switch actions and the audit of control commands, per owned account, once.

Every control command that applies to an account (its own scope and `*`, kill switch and
trading state: the latest of each, as the compacted topic holds them) is recorded in
`control_actions` by the worker that owns the account's lane — who, why, when, what was done.
The row is also the idempotency key of the action: `--cancel` (cancel the account's open orders)
and `--flatten` (DELETE /v2/positions?cancel_orders=true) run only for the worker that claims the
row, and never again once it is `done` — a restart replaying the control topic, another worker
taking the lane over, or the same command re-applied find the row and do nothing. A failed
attempt (broker error) is retried; one left `started` by a crash is taken up again after
`STALE_AFTER_SECONDS`.

With `TRADING_KILL_SWITCH_BROKER_SUSPEND=true` an engaged switch is mirrored to the broker's
`suspend_trade` (after its cancel/flatten, whose closing orders the broker would refuse
otherwise) and released when no switch holds the account any more.

A command that is no longer the latest of its scope is never acted on: an engage released before
this worker saw it does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from schemas.control import ALL_ACCOUNTS, ControlCommand, ControlKind, KillMode
from streams.broker.errors import BrokerError
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.trading_state import TradingStateBook
from streams.observability.status import LaneStatus

log = logging.getLogger(__name__)

STALE_AFTER_SECONDS = 120.0  # a `started` row older than this was left by a crash
RETRY_SECONDS = 10.0  # after a failed attempt (broker or database)


class ActionBroker(Protocol):
    async def cancel_open_orders(self) -> list[dict[str, Any]]: ...

    async def close_all_positions(self) -> list[dict[str, Any]]: ...

    async def set_suspend_trade(self, suspended: bool) -> dict[str, Any]: ...

    async def list_orders(self, status: str = "open") -> list[dict[str, Any]]: ...


class Audit(Protocol):
    async def claim(
        self, account_label: str, command: ControlCommand, action: str, stale_after: float
    ) -> int | None: ...

    async def finish(
        self,
        account_label: str,
        command_id: str,
        status: str,
        result: Mapping[str, Any] | None,
        error: str | None = None,
    ) -> None: ...


def action_of(command: ControlCommand, cancel_on_engage: bool = False) -> str:
    """What a command does to an account: block, cancel, flatten, release, or its state.
    `cancel_on_engage` (TRADING_KILL_SWITCH_CANCEL_OPEN_ORDERS) turns a plain block into a
    cancel."""
    if command.kind is ControlKind.trading_state:
        assert command.state is not None
        return command.state.value
    if not command.engaged:
        return "release"
    if command.mode is KillMode.block and cancel_on_engage:
        return KillMode.cancel.value
    return command.mode.value


@dataclass
class ControlActions:
    kills: KillSwitchBook
    states: TradingStateBook
    audit: Audit
    suspend_mirror: bool = False
    cancel_on_engage: bool = False
    clock: Callable[[], float] = time.monotonic
    handled: set[tuple[str, str]] = field(default_factory=set)  # (account, command_id)
    _retry_at: dict[tuple[str, str], float] = field(default_factory=dict)
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def commands_for(self, label: str) -> list[ControlCommand]:
        """The latest command of each kind for the account's scope and `*`, oldest first."""
        found = [
            book.by_scope.get(scope)
            for book in (self.kills, self.states)
            for scope in (label, ALL_ACCOUNTS)
        ]
        return sorted((c for c in found if c is not None), key=lambda c: c.issued_at)

    def pending(self, label: str) -> list[ControlCommand]:
        now = self.clock()
        return [
            c
            for c in self.commands_for(label)
            if (label, c.command_id) not in self.handled
            and self._retry_at.get((label, c.command_id), 0.0) <= now
        ]

    def watch(self, label: str, broker: ActionBroker, status: LaneStatus) -> None:
        """Start auditing/acting on the account's pending commands (one task per account)."""
        running = self._tasks.get(label)
        if running is not None and not running.done():
            return
        pending = self.pending(label)
        if not pending:
            return
        self._tasks[label] = asyncio.create_task(self.run(label, pending, broker, status))

    async def run(
        self,
        label: str,
        commands: list[ControlCommand],
        broker: ActionBroker,
        status: LaneStatus,
    ) -> None:
        for command in commands:
            try:
                await self._one(label, command, broker, status)
            except Exception:  # a bug must not stop the upkeep timer; retried later
                log.exception("control action failed", extra={"account": label})
                self._retry_at[(label, command.command_id)] = self.clock() + RETRY_SECONDS

    async def _one(
        self, label: str, command: ControlCommand, broker: ActionBroker, status: LaneStatus
    ) -> None:
        key = (label, command.command_id)
        action = action_of(command, self.cancel_on_engage)
        try:
            attempt = await self.audit.claim(label, command, action, STALE_AFTER_SECONDS)
        except Exception as exc:  # noqa: BLE001 - Postgres down: nothing is done unaudited
            self._retry_at[key] = self.clock() + RETRY_SECONDS
            status.record_error(
                "control_audit", f"control action not audited: {type(exc).__name__}"
            )
            return
        if attempt is None:  # done before (a restart, another worker, a replay)
            self.handled.add(key)
            return
        result: dict[str, Any] = {"action": action, "attempt": attempt}
        try:
            await self._act(label, command, action, broker, result)
        except BrokerError as exc:
            self._retry_at[key] = self.clock() + RETRY_SECONDS
            status.record_error(exc.kind.value, f"control action {action}: {exc}")
            await self.audit.finish(label, command.command_id, "failed", result, str(exc))
            status.set_control_action(self._view(command, action, "failed", result))
            return
        await self.audit.finish(label, command.command_id, "done", result)
        self.handled.add(key)
        status.set_control_action(self._view(command, action, "done", result))
        log.warning(
            "control action %s done for %s",
            action,
            label,
            extra={
                "account": label,
                "command_id": command.command_id,
                "operator": command.operator,
                "reason": command.reason,
                "result": result,
            },
        )

    async def _act(
        self,
        label: str,
        command: ControlCommand,
        action: str,
        broker: ActionBroker,
        result: dict[str, Any],
    ) -> None:
        if command.kind is not ControlKind.kill_switch:
            return  # a trading state is applied by the lanes; this is its audit row
        if action == KillMode.cancel.value:
            result["cancelled_orders"] = len(await broker.cancel_open_orders())
        elif action == KillMode.flatten.value:
            answers = await broker.close_all_positions()
            result["closed_positions"] = [
                {"symbol": a.get("symbol"), "status": a.get("status")} for a in answers
            ]
        if not self.suspend_mirror:
            return
        if command.engaged:
            await broker.set_suspend_trade(True)
            result["suspend_trade"] = True
        elif self.kills.engaged_for(label) is None:
            await broker.set_suspend_trade(False)
            result["suspend_trade"] = False

    @staticmethod
    def _view(
        command: ControlCommand, action: str, state: str, result: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "command_id": command.command_id,
            "kind": command.kind.value,
            "action": action,
            "scope": command.scope,
            "status": state,
            "operator": command.operator,
            "reason": command.reason,
            "issued_at": command.issued_at.isoformat(),
            "result": dict(result),
        }

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
