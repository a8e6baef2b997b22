"""Ledger entries → Postgres rows, through the repository's idempotent upserts.

Writing an entry twice is harmless (account-scoped unique keys; statuses only move forward), which
is what lets the lane retry a failed write, or redo it after a crash, without a second order.
The pool is opened on first use, so a worker starts (and parks its decisions) while Postgres is
down, and picks up once it answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from schemas.control import ControlCommand
from streams.domain.ledger import LedgerEntry, LedgerState
from streams.domain.sizing import AccountSnapshot
from streams.execution.cursor import LaneCursor
from streams.persistence.rows import DecisionRow, ExecutionRow, PositionSnapshotRow
from streams.persistence.shared import RepositoryProvider


def decision_row(entry: LedgerEntry) -> DecisionRow:
    d = entry.decision
    return DecisionRow(
        account_label=d.account_label,
        decision_hash=d.decision_hash,
        strategy_id=d.strategy_id,
        symbol=d.symbol,
        timeframe=d.timeframe,
        action=d.action.value,
        event_ts=d.event_ts,
        status=entry.state.value,
        qty=entry.plan.qty if entry.plan is not None else None,
        notional=d.notional,
        price=d.price,
        confidence=d.confidence,
        rejection_reasons=entry.reasons,
        decision_json=d.model_dump(mode="json"),
    )


def _decimal(value: Any) -> Decimal | None:
    return None if value in (None, "") else Decimal(str(value))


def _timestamp(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def execution_row(entry: LedgerEntry) -> ExecutionRow:
    """The execution of a submitted entry, from the broker's acknowledged order."""
    plan = entry.plan
    assert plan is not None and entry.alpaca_order_id is not None
    order: Mapping[str, Any] = entry.order or {}
    return ExecutionRow(
        account_label=entry.account_label,
        client_order_id=plan.client_order_id,
        alpaca_order_id=entry.alpaca_order_id,
        symbol=plan.symbol,
        side=plan.side.value,
        order_type=plan.order_type,
        time_in_force=plan.time_in_force,
        submitted_qty=plan.qty,
        status=str(order.get("status") or "new"),
        filled_qty=_decimal(order.get("filled_qty")) or Decimal(0),
        avg_fill_price=_decimal(order.get("filled_avg_price")),
        raw_order=dict(order) or None,
        last_event_ts=_timestamp(order.get("updated_at")),
    )


class LaneSink:
    """What the lanes write to Postgres; every write is an idempotent upsert or an append."""

    def __init__(self, repositories: RepositoryProvider) -> None:
        self._repos = repositories

    async def persist(self, entry: LedgerEntry) -> None:
        """The rows the entry's state calls for: the decision, and the execution once submitted.

        A submitted entry's decision row normally exists (written as `planned`): then the
        execution upsert alone writes both, mirroring the status to the decision in the same
        statement (one round trip instead of two). Otherwise the decision row comes first."""
        repo = await self._repos.get()
        submitted = entry.state is LedgerState.submitted
        if submitted and await repo.upsert_decided_execution(execution_row(entry)) is not None:
            return
        await repo.upsert_decisions([decision_row(entry)])
        if submitted:
            await repo.upsert_execution(execution_row(entry))

    async def snapshot(self, snapshot: AccountSnapshot, positions: list[dict[str, Any]]) -> None:
        repo = await self._repos.get()
        await repo.insert_position_snapshot(
            PositionSnapshotRow(
                account_label=snapshot.account_label,
                as_of=snapshot.as_of,
                equity=snapshot.equity,
                cash=snapshot.cash,
                buying_power=snapshot.buying_power,
                positions=positions,
            )
        )

    async def pin_account(self, account_label: str, account_number: str) -> str:
        repo = await self._repos.get()
        return await repo.pin_account(account_label, account_number)

    async def close(self) -> None:
        await self._repos.close()

    async def cursor(self, source: str, account_label: str, cursor: LaneCursor) -> None:
        repo = await self._repos.get()
        await repo.upsert_cursor(source, account_label, cursor.event_ts, cursor.symbol, cursor.seq)


class ControlAudit:
    """The `control_actions` rows: claim a command's action for an account, record its end."""

    def __init__(self, repositories: RepositoryProvider) -> None:
        self._repos = repositories

    async def claim(
        self, account_label: str, command: ControlCommand, action: str, stale_after: float
    ) -> int | None:
        repo = await self._repos.get()
        return await repo.claim_control_action(
            account_label,
            command.command_id,
            kind=command.kind.value,
            action=action,
            scope=command.scope,
            operator=command.operator,
            reason=command.reason,
            issued_at=command.issued_at,
            status="started",
            stale_after_seconds=stale_after,
        )

    async def finish(
        self,
        account_label: str,
        command_id: str,
        status: str,
        result: Mapping[str, Any] | None,
        error: str | None = None,
    ) -> None:
        repo = await self._repos.get()
        await repo.finish_control_action(account_label, command_id, status, result, error)
