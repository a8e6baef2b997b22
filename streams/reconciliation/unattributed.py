"""Held trade updates (`unattributed_order_events`) → their account, once their order is known.

The router holds a v1 event under no account when neither the order index nor Postgres knows its
order yet (multi-account mode). The leader sweeps the held events every
`TORGHUT_UNATTRIBUTED_SWEEP_SECONDS`: each one whose order now has an owner (in Postgres: a
decision with that client order id or an execution with that Alpaca order id; else in the order
index) is normalised under that account and *re-published* to the account-updates topic, keyed
by the account, exactly as the router would have sent it (same source coordinates, same
fingerprint). The account's applier then stores, dedupes and folds it in like any other update,
so the monotonic apply (status rank, cumulative fill, terminal stays terminal) and the
account-scoped SQL stay the only writers of `execution_order_events` and `executions`; arriving
late or twice changes nothing. A held row is deleted only after the broker acknowledged the
re-published record (a crash in between re-publishes it: a duplicate, deduped downstream).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from pydantic import ValidationError

from schemas.trade_update import TradeUpdateEnvelope
from streams.dlq import DeadLetters
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.model import Attribution
from streams.domain.trade_updates.normalise import (
    MissingOrderIdentity,
    SourceCoordinates,
    normalise,
)
from streams.domain.trade_updates.validate import InvalidTradeUpdate
from streams.persistence.rows import HeldEventRow
from streams.reconciliation.attribution import owner_from
from streams.reconciliation.router import TradeUpdateRouter

log = logging.getLogger(__name__)


class HeldStore(Protocol):
    async def held_with_owners(self, limit: int = 500) -> list[HeldEventRow]: ...

    async def release_held(self, ids: Sequence[int]) -> int: ...

    async def count_held(self) -> int: ...


@dataclass
class SweepReport:
    held: int = 0
    resolved: int = 0
    dead_lettered: int = 0
    waiting: int = 0


class UnattributedSweep:
    def __init__(
        self,
        *,
        router: TradeUpdateRouter,
        store: Callable[[], Awaitable[HeldStore]],
        dead_letters: DeadLetters,
        batch_size: int = 500,
    ) -> None:
        self._router = router
        self._store = store
        self._dead_letters = dead_letters
        self._batch = batch_size
        self.held = 0  # events held at the last sweep (status)

    async def sweep(self) -> SweepReport:
        """One pass over the oldest held events. Never raises: Postgres or Kafka being down
        leaves the events held for the next pass."""
        report = SweepReport()
        try:
            store = await self._store()
            rows = await store.held_with_owners(self._batch)
            report.held = len(rows)
            done = [r.id for r in rows if r.id is not None and await self._resolve(r, report)]
            await store.release_held(done)
            self.held = await store.count_held()
            metrics.HELD.set(self.held)
        except Exception as exc:  # noqa: BLE001 - the next pass retries; nothing is released
            log.warning("unattributed sweep failed: %s", type(exc).__name__)
        return report

    async def _resolve(self, row: HeldEventRow, report: SweepReport) -> bool:
        """True when the row was handed on (to its account or to the DLQ) and can go."""
        attributor = self._router.attributor
        try:
            envelope = TradeUpdateEnvelope.model_validate(row.envelope)
            owner = owner_from(
                list(row.owners), attributor.known, Attribution.database, "postgres"
            ) or attributor.indexed_owner(row.client_order_id, row.alpaca_order_id)
            if owner is None:
                report.waiting += 1
                return False
            update = normalise(
                envelope,
                SourceCoordinates(row.source_topic, row.source_partition, row.source_offset),
                owner.label,
                owner.attribution,
                received_at=row.event_ts or datetime.now(UTC),
            )
        except (InvalidTradeUpdate, MissingOrderIdentity, ValidationError) as exc:
            reason = getattr(exc, "reason", "trade_update_invalid")
            await self._dead_letter(row, reason, exc)
            report.dead_lettered += 1
            return True
        await (await self._router.publish(update))  # acknowledged before the row goes
        metrics.RESOLVED.labels(owner.label).inc()
        report.resolved += 1
        return True

    async def _dead_letter(self, row: HeldEventRow, reason: str, exc: BaseException) -> None:
        metrics.DROPPED.labels(reason).inc()
        await self._dead_letters.send(
            reason=reason,
            topic=row.source_topic,
            partition=row.source_partition,
            offset=row.source_offset,
            key=None,
            value=json.dumps(row.envelope, separators=(",", ":")).encode(),
            error=exc,
        )
