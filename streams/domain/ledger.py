"""The decision ledger: one entry per (account, decision), the lane's idempotency record (pure).

    received ─▶ planned ─▶ submitting ─▶ submitted
        │          │            │
        └──────────┴────────────┴──────▶ rejected

Every transition is written (durably, to the changelog) before its side effect: `planned` before
the decision row, `submitting` before the broker call, `submitted`/`rejected` before their rows.
`persisted` says whether Postgres holds the entry's current state; a terminal entry that is not
persisted is persisted again (idempotent upserts), a persisted terminal entry is skipped.

An entry found in `submitting` may or may not have an order at the broker: it is resolved by
looking the order up by client order id (= decision hash) before anything is submitted again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.common import UtcDatetime, iso_millis
from schemas.decision import AccountDecision
from streams.domain.sizing import OrderPlan


class LedgerState(StrEnum):
    received = "received"
    planned = "planned"
    submitting = "submitting"
    submitted = "submitted"
    rejected = "rejected"


TERMINAL = frozenset({LedgerState.submitted, LedgerState.rejected})

_ALLOWED: dict[LedgerState, frozenset[LedgerState]] = {
    LedgerState.received: frozenset({LedgerState.planned, LedgerState.rejected}),
    LedgerState.planned: frozenset({LedgerState.submitting, LedgerState.rejected}),
    # submitting → submitting is a new attempt after the lookup found no order.
    LedgerState.submitting: frozenset(
        {LedgerState.submitting, LedgerState.submitted, LedgerState.rejected}
    ),
    LedgerState.submitted: frozenset(),
    LedgerState.rejected: frozenset(),
}


class Step(StrEnum):
    """What the lane does next with an entry."""

    plan = "plan"  # received: risk and sizing
    persist = "persist"  # write the decision/execution rows for the current state
    submit = "submit"  # planned and persisted: controls, then the broker
    resolve = "resolve"  # submitting: look the order up by client id first
    done = "done"  # terminal and persisted: skip


class LedgerTransitionError(ValueError):
    pass


def ledger_key(account_label: str, decision_hash: str) -> str:
    return f"{account_label}|{decision_hash}"


def slot_key(account_label: str, slot: str) -> str:
    """The `lane-slots` key recording which decision took a signal slot of an account."""
    return f"{account_label}|{slot}"


def signal_slot(decision: AccountDecision) -> str:
    """At most one decision per (account, symbol, timeframe, signal event time): whatever the
    strategy runtime's state, a second, different decision for the same slot is refused."""
    return f"{decision.symbol}|{decision.timeframe}|{iso_millis(decision.event_ts)}"


class LedgerEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    # `state` and `persisted` come first: `is_done` reads them off the encoded bytes.
    state: LedgerState
    persisted: bool = False
    decision: AccountDecision
    plan: OrderPlan | None = None
    reasons: tuple[str, ...] = ()
    alpaca_order_id: str | None = None
    order: dict[str, Any] | None = None  # the broker's order as acknowledged
    attempts: int = 0  # broker submissions tried
    retry_at: UtcDatetime | None = None  # parked until then (an ambiguous outcome, a backoff)
    last_error: str | None = None
    received_at: UtcDatetime
    updated_at: UtcDatetime
    submitted_at: UtcDatetime | None = None

    @property
    def key(self) -> str:
        return ledger_key(self.decision.account_label, self.decision.decision_hash)

    @property
    def account_label(self) -> str:
        return self.decision.account_label

    @property
    def decision_hash(self) -> str:
        return self.decision.decision_hash

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def step(self) -> Step:
        if self.state is LedgerState.received:
            return Step.plan
        if self.state is LedgerState.submitting:
            return Step.resolve
        if not self.persisted:
            return Step.persist
        return Step.submit if self.state is LedgerState.planned else Step.done

    def _to(self, state: LedgerState, now: datetime, **changes: object) -> LedgerEntry:
        if state not in _ALLOWED[self.state]:
            raise LedgerTransitionError(f"ledger: {self.state} -> {state} is not allowed")
        base: dict[str, object] = {
            "state": state,
            "updated_at": now,
            "persisted": False,
            "retry_at": None,
            "last_error": None,
        }
        return self.model_copy(update={**base, **changes})

    def planned(self, plan: OrderPlan, now: datetime) -> LedgerEntry:
        return self._to(LedgerState.planned, now, plan=plan)

    def rejected(self, reasons: tuple[str, ...] | list[str], now: datetime) -> LedgerEntry:
        """Every rejected decision says why: an empty reason list is a bug, refused here."""
        if not reasons or not all(reasons):
            raise LedgerTransitionError(f"ledger: a rejection needs reasons, got {reasons!r}")
        return self._to(LedgerState.rejected, now, reasons=tuple(reasons))

    def submitting(self, now: datetime) -> LedgerEntry:
        return self._to(LedgerState.submitting, now, attempts=self.attempts + 1)

    def submitted(self, order: dict[str, Any], now: datetime) -> LedgerEntry:
        return self._to(
            LedgerState.submitted,
            now,
            alpaca_order_id=str(order["id"]),
            order=order,
            submitted_at=now,
        )

    def parked(self, retry_at: datetime, error: str, now: datetime) -> LedgerEntry:
        """Same state, to be taken up again at `retry_at` (no transition)."""
        return self.model_copy(
            update={"retry_at": retry_at, "last_error": error, "updated_at": now}
        )

    def marked_persisted(self) -> LedgerEntry:
        return self.model_copy(update={"persisted": True, "retry_at": None, "last_error": None})


def received(decision: AccountDecision, now: datetime) -> LedgerEntry:
    return LedgerEntry(
        state=LedgerState.received, decision=decision, received_at=now, updated_at=now
    )


_DONE_PREFIXES = tuple(
    f'{{"state":"{state.value}","persisted":true,'.encode() for state in TERMINAL
)


def is_done(raw: bytes) -> bool:
    """Whether an encoded entry is terminal and persisted, without decoding it (ledger scans)."""
    return bytes(raw).startswith(_DONE_PREFIXES)


def encode_entry(entry: LedgerEntry) -> bytes:
    return entry.model_dump_json().encode()


def decode_entry(raw: bytes) -> LedgerEntry:
    return LedgerEntry.model_validate_json(raw)


@dataclass
class LedgerScan:
    """What a scan of the ledger found: entries per account, and the unfinished entries."""

    sizes: dict[str, int] = field(default_factory=dict)
    unfinished: list[LedgerEntry] = field(default_factory=list)
