"""Status ranks: the order in which an execution or a decision may move, and only forwards.

Used by the repository's SQL (rendered as a CASE expression) and by Python
callers. A terminal status has rank `TERMINAL` and never changes again; an unknown status ranks
0, so it can never move anything backwards (a growing fill still applies).
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from streams.domain.order_state import STATUS_RANK, TERMINAL_RANK

# The execution ranks are the domain's (streams.domain.order_state): one table for the order
# feed, the reconciler and this SQL.
TERMINAL = TERMINAL_RANK
EXECUTION_RANKS: Mapping[str, int] = STATUS_RANK

DECISION_RANKS: Mapping[str, int] = {
    "planned": 0,
    "submitting": 10,
    "submitted": 20,
    "partially_filled": 30,
    "filled": TERMINAL,
    "canceled": TERMINAL,
    "expired": TERMINAL,
    "rejected": TERMINAL,
    "replaced": TERMINAL,
}

EXECUTION_TERMINAL: frozenset[str] = frozenset(
    s for s, r in EXECUTION_RANKS.items() if r == TERMINAL
)
DECISION_TERMINAL: frozenset[str] = frozenset(s for s, r in DECISION_RANKS.items() if r == TERMINAL)

# A decision closed `rejected` because its *order* was rejected by the broker after it had been
# accepted (a trade update or the reconciler's look-up says `rejected`): the broker gives no
# reason with the order, so the decision carries this one. Every rejected decision has a reason.
BROKER_ORDER_REJECTED = "broker_rejected:order_rejected"


def execution_rank(status: str) -> int:
    return EXECUTION_RANKS.get(status, 0)


def decision_rank(status: str) -> int:
    return DECISION_RANKS.get(status, 0)


def is_terminal_execution(status: str) -> bool:
    return execution_rank(status) >= TERMINAL


def decision_status_for(execution_status: str) -> str:
    """The decision status that mirrors an execution status."""
    if execution_status in DECISION_TERMINAL or execution_status == "partially_filled":
        return execution_status
    if execution_status == "submitting":
        return "submitting"
    return "submitted"


def rejection_reasons_sql(status: str, current: str) -> str:
    """The reasons of a decision moving to `status` (SQL expressions): the current ones, or
    [BROKER_ORDER_REJECTED] when it becomes `rejected` without any (constants only)."""
    default = json.dumps([BROKER_ORDER_REJECTED])
    return (
        f"(CASE WHEN {status} = 'rejected' AND jsonb_array_length({current}) = 0 "
        f"THEN '{default}'::jsonb ELSE {current} END)"
    )


def rank_sql(column: str, ranks: Mapping[str, int]) -> str:
    """`CASE column WHEN 'x' THEN n ... ELSE 0 END`, built from a rank table (constants only)."""
    whens = " ".join(f"WHEN '{status}' THEN {rank}" for status, rank in sorted(ranks.items()))
    return f"(CASE {column} {whens} ELSE 0 END)"
