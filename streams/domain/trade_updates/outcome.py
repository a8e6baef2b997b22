"""What applying one trade update meant, for the per-account counters."""

from __future__ import annotations

import enum
from decimal import Decimal

from streams.domain.trade_updates.model import TradeUpdate
from streams.persistence.rows import ApplyOutcome, ApplyResult

OTHER_ACCOUNT = "_other"  # metrics label of accounts outside the registry (bounded cardinality)


class Outcome(str, enum.Enum):
    applied = "applied"  # the execution moved forward
    unchanged = "unchanged"  # the execution already holds exactly this state (a re-delivery)
    out_of_order = "out_of_order"  # the execution is already further: the update was stale
    unlinked = "unlinked"  # no execution of this account matches yet (stored, linked later)
    overfill = "overfill"  # refused: its cumulative fill is above the order quantity


def classify(update: TradeUpdate, result: ApplyResult) -> Outcome:
    """A stale result is out of order only when the execution is strictly further along.

    A v1/v2 copy arriving in a later batch, or a redelivery, finds the execution holding the
    very state it carries: that is not out of order.
    """
    if result.outcome is ApplyOutcome.applied:
        return Outcome.applied
    if result.outcome is ApplyOutcome.not_found:
        return Outcome.unlinked
    if result.outcome is ApplyOutcome.overfill:
        return Outcome.overfill
    same_status = result.status == update.status
    same_fill = (result.filled_qty or Decimal(0)) == update.cumulative_fill
    return Outcome.unchanged if same_status and same_fill else Outcome.out_of_order


def metrics_account(label: str, known: frozenset[str]) -> str:
    return label if label in known else OTHER_ACCOUNT
