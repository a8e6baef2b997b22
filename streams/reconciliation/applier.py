"""Apply a batch of re-keyed trade updates: store each event once, fold it into its execution.

Per batch: decode, check (known account, numbers, event time: a dead letter otherwise), drop
in-batch copies (v1 + v2 of one event), store the events of each account in one statement
(`append_order_events`: fingerprint / source-coordinate dedupe), then apply every update in
arrival order (`apply_order_update`: account-scoped with AND, monotonic in one
statement, mirrors the decision status). Updates already stored are applied again on purpose: a
crash between storing and applying must not lose the apply, and applying is idempotent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.model import (
    Attribution,
    ReconcileRequest,
    TradeUpdate,
    decode_record,
)
from streams.domain.trade_updates.outcome import Outcome, classify, metrics_account
from streams.domain.trade_updates.rows import dedupe_batch, event_row, order_update_row
from streams.domain.trade_updates.validate import InvalidTradeUpdate, check_account, check_update
from streams.errors import is_infrastructure, retry_transient
from streams.persistence.rows import ApplyResult, OrderEventRow, OrderUpdateRow
from streams.reconciliation.fills import SOURCE_TOPIC as FILL_SOURCE

log = logging.getLogger(__name__)

T = TypeVar("T")


class OrderFeedStore(Protocol):
    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int: ...

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult: ...


DeadLetter = Callable[[Any, str, BaseException | None], Awaitable[None]]
ReconcileTrigger = Callable[[str, str], Awaitable[None]]


@dataclass
class BatchReport:
    """Counts of one batch (also exported as per-account prometheus counters)."""

    received: int = 0
    duplicates: int = 0
    outcomes: dict[Outcome, int] = field(default_factory=dict)
    dead_lettered: int = 0
    reconcile_requests: int = 0

    def count(self, outcome: Outcome) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


class OrderFeedApplier:
    def __init__(
        self,
        store: OrderFeedStore,
        *,
        known_accounts: frozenset[str],
        dead_letter: DeadLetter,
        request_reconcile: ReconcileTrigger,
        max_event_time_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retry_seconds: float = 30.0,
        observe: Callable[[TradeUpdate], None] = lambda update: None,
    ) -> None:
        self._store = store
        self._observe = observe  # every update applied (the buying-power check's order view)
        self._retry_seconds = retry_seconds
        self._deadline = 0.0  # loop time: the end of the current batch's budget
        self._known = known_accounts
        self._skew = max_event_time_skew
        self._clock = clock
        self._dead_letter = dead_letter
        self._request_reconcile = request_reconcile

    async def apply(self, events: Sequence[Any]) -> BatchReport:
        report = BatchReport()
        self._deadline = asyncio.get_running_loop().time() + self._retry_seconds
        pairs = await self._decode(events, report)
        await self._apply_pairs(pairs, report)
        return report

    async def apply_updates(self, updates: Sequence[TradeUpdate]) -> BatchReport:
        """Updates that did not come from Kafka (fill replay): the same checks, storage and
        monotonic apply as a batch of the order feed. An update that fails a check or is
        poison is counted and logged (there is no record to dead-letter)."""
        report = BatchReport()
        self._deadline = asyncio.get_running_loop().time() + self._retry_seconds
        pairs: list[tuple[Any, TradeUpdate]] = []
        for update in updates:
            try:
                self._check(update)
            except InvalidTradeUpdate as exc:
                await self._drop(None, exc.reason, exc, report)
                continue
            pairs.append((None, update))
        await self._apply_pairs(pairs, report)
        return report

    async def _apply_pairs(self, pairs: list[tuple[Any, TradeUpdate]], report: BatchReport) -> None:
        updates, copies = dedupe_batch([u for _, u in pairs])
        event_of = {u.fingerprint: e for e, u in reversed(pairs)}
        self._count_received(pairs, copies, report)
        for account, rows in _by_account(updates).items():
            await self._store_events(account, rows, event_of, report)
        for update in updates:
            await self._apply_one(update, event_of[update.fingerprint], report)

    async def _decode(
        self, events: Sequence[Any], report: BatchReport
    ) -> list[tuple[Any, TradeUpdate]]:
        pairs: list[tuple[Any, TradeUpdate]] = []
        for event in events:
            try:
                record = decode_record(event.value)
            except (ValidationError, ValueError, TypeError) as exc:
                await self._drop(event, "account_update_invalid", exc, report)
                continue
            try:
                self._check(record)
            except InvalidTradeUpdate as exc:
                await self._drop(event, exc.reason, exc, report)
                continue
            if isinstance(record, ReconcileRequest):
                report.reconcile_requests += 1
                await self._request_reconcile(record.account_label, record.reason)
            else:
                pairs.append((event, record))
        return pairs

    def _check(self, record: TradeUpdate | ReconcileRequest) -> None:
        """The router's rules again, on whatever reached the re-keyed topic: no row is ever
        written under a label outside the registry, a non-finite or future value."""
        if isinstance(record, ReconcileRequest):
            check_account(record.account_label, self._known, "account_label")
        else:
            check_update(record, self._known, self._clock(), self._skew)

    def _count_received(
        self, pairs: list[tuple[Any, TradeUpdate]], copies: int, report: BatchReport
    ) -> None:
        report.received += len(pairs)
        seen: set[str] = set()
        for _, update in pairs:
            account = metrics_account(update.account_label, self._known)
            metrics.EVENTS.labels(account, update.event).inc()
            if update.attribution is Attribution.default:
                metrics.UNATTRIBUTED.inc()
            if update.fingerprint in seen:
                metrics.DUPLICATES.labels(account).inc()
            seen.add(update.fingerprint)
        report.duplicates += copies

    async def _store_events(
        self,
        account: str,
        updates: list[TradeUpdate],
        event_of: dict[str, Any],
        report: BatchReport,
    ) -> None:
        rows = [event_row(u) for u in updates]
        try:
            inserted = await self._retry(
                lambda: self._store.append_order_events(rows), "append_order_events"
            )
        except Exception as exc:
            if is_infrastructure(exc):
                raise  # infrastructure, out of budget: the whole batch waits for redelivery
            inserted = await self._store_one_by_one(updates, event_of, report)
        stored_before = len(rows) - inserted
        report.duplicates += stored_before
        metrics.DUPLICATES.labels(metrics_account(account, self._known)).inc(stored_before)

    async def _store_one_by_one(
        self, updates: list[TradeUpdate], event_of: dict[str, Any], report: BatchReport
    ) -> int:
        inserted = 0
        for update in updates:
            row = event_row(update)
            try:
                inserted += await self._retry(
                    partial(self._store.append_order_events, [row]), "append_order_events"
                )
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                # poison: dead-letter this record only
                await self._drop(
                    event_of[update.fingerprint], "order_event_store_failed", exc, report
                )
                inserted += 1  # not a duplicate: keep it out of the duplicate count
        return inserted

    async def _apply_one(self, update: TradeUpdate, event: Any, report: BatchReport) -> None:
        row = order_update_row(update)
        try:
            result = await self._retry(
                lambda: self._store.apply_order_update(row), "apply_order_update"
            )
        except Exception as exc:
            if is_infrastructure(exc):
                raise
            # poison: dead-letter and move on
            await self._drop(event, "order_update_apply_failed", exc, report)
            return
        outcome = classify(update, result)
        report.count(outcome)
        self._observed(update)
        account = metrics_account(update.account_label, self._known)
        counter = _OUTCOME_COUNTERS.get(outcome)
        if counter is not None:
            counter.labels(account).inc()
        if outcome is Outcome.overfill:
            metrics.OVERFILLS.labels(account, _source(update)).inc()
            log.error(
                "over-fill refused: cumulative fill above the order quantity",
                extra={
                    "account": update.account_label,
                    "order_id": update.order_id,
                    "execution_id": update.execution_id,
                    "filled_qty": str(update.filled_qty),
                    "execution_filled_qty": str(result.filled_qty),
                },
            )
        if outcome is Outcome.out_of_order:
            log.info(
                "stale trade update ignored",
                extra={
                    "account": update.account_label,
                    "order_id": update.order_id,
                    "event": update.event,
                    "status": update.status,
                    "execution_status": result.status,
                },
            )

    def _observed(self, update: TradeUpdate) -> None:
        try:
            self._observe(update)
        except Exception:  # a view for the lanes: it never fails the apply
            log.exception("order update not observed", extra={"account": update.account_label})

    async def _retry(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Transient failures retried until the batch's budget ends (then raised)."""
        return await retry_transient(call, what, deadline=self._deadline)

    async def _drop(
        self, event: Any, reason: str, error: BaseException | None, report: BatchReport
    ) -> None:
        report.dead_lettered += 1
        metrics.DROPPED.labels(reason).inc()
        if event is None:  # not from Kafka (fill replay): nothing to dead-letter
            log.warning("order update not applied: %s (%s)", reason, error)
            return
        await self._dead_letter(event, reason, error)


_OUTCOME_COUNTERS = {
    Outcome.applied: metrics.APPLIED,
    Outcome.out_of_order: metrics.OUT_OF_ORDER,
    Outcome.unlinked: metrics.UNLINKED,
}


def _source(update: TradeUpdate) -> str:
    return "fill_replay" if update.source_topic == FILL_SOURCE else "trade_update"


def _by_account(updates: list[TradeUpdate]) -> dict[str, list[TradeUpdate]]:
    grouped: dict[str, list[TradeUpdate]] = {}
    for update in updates:
        grouped.setdefault(update.account_label, []).append(update)
    return grouped
