"""Broker order state rules: status ranks, terminal statuses, monotonic merge, event fingerprint.

The single source of these rules: the order feed, the reconciler and the repository's monotonic
SQL all follow them. An execution never moves backwards: a terminal status stays terminal, the
cumulative `filled_qty` only grows, and the status only advances in rank. The forwarder's `seq`
is never used for ordering (it restarts with the forwarder process).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from schemas.common import to_utc

TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"filled", "canceled", "expired", "rejected", "replaced"}
)

# Rank of every broker status (plus our own `submitting`, before the broker answered). Equal
# ranks are alternatives at the same stage; a terminal status outranks everything. Unknown
# statuses rank 0: they never overwrite a known status, but a fill they carry still counts.
# The repository's SQL renders this same table (streams/persistence/status.py imports it).
TERMINAL_RANK = 100
STATUS_RANK: dict[str, int] = {
    "submitting": 5,
    "pending_new": 10,
    "accepted": 15,
    "accepted_for_bidding": 15,
    "new": 20,
    "held": 20,
    "calculated": 30,
    "partially_filled": 40,
    "stopped": 45,
    "suspended": 45,
    "done_for_day": 50,
    "pending_replace": 60,
    "pending_cancel": 60,
    **dict.fromkeys(TERMINAL_STATUSES, TERMINAL_RANK),
}


def status_rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "", 0)


def is_terminal(status: str | None) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class OrderState:
    """What an execution knows about its broker order."""

    status: str
    filled_qty: Decimal = Decimal(0)
    filled_avg_price: Decimal | None = None
    event_ts: datetime | None = None


def is_advance(old: OrderState, new: OrderState) -> bool:
    """True when `new` tells something `old` does not: a higher-ranked status or more fill.

    Nothing advances a terminal order. Status and fill are folded independently (each keeps its
    maximum), so a late fill still counts after `pending_cancel`, and a stale event changes
    nothing: the fold does not depend on the order the events arrive in.
    """
    if is_terminal(old.status):
        return False
    return status_rank(new.status) > status_rank(old.status) or new.filled_qty > old.filled_qty


def merge(old: OrderState, new: OrderState) -> OrderState:
    """The monotonic fold of `new` into `old` (`old` unchanged when `new` does not advance).

    The status keeps the higher rank, the fill the larger cumulative quantity (with the average
    price that belongs to it), the event time the newest seen. The repository's SQL
    (`apply_order_update`) implements exactly this in one statement.
    """
    if not is_advance(old, new):
        return old
    more_fill = new.filled_qty > old.filled_qty
    higher = status_rank(new.status) > status_rank(old.status)
    return OrderState(
        status=new.status if higher else old.status,
        filled_qty=max(old.filled_qty, new.filled_qty),
        filled_avg_price=(new.filled_avg_price or old.filled_avg_price)
        if more_fill
        else (old.filled_avg_price or new.filled_avg_price),
        event_ts=_latest(old.event_ts, new.event_ts),
    )


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)


def canonical_decimal(value: Decimal | None) -> str | None:
    """`4`, `4.0` and `4.000` are the same quantity: one spelling for hashing."""
    if value is None:
        return None
    normal = value.normalize()
    return format(normal, "f") if normal != 0 else "0"


def event_fingerprint(
    *,
    account_label: str,
    order_id: str | None,
    client_order_id: str | None,
    event: str | None,
    status: str | None,
    event_ts: datetime | None,
    execution_id: str | None,
    qty: Decimal | None,
    filled_qty: Decimal | None,
    filled_avg_price: Decimal | None,
) -> str:
    """sha256 hex identifying one broker event of one account.

    A v1 and a v2 copy of the same event, attributed to the same account, give the same
    fingerprint (the account label is inside, the topic and `seq` are not); so does a replayed
    execution. Money and quantities are canonicalised so `"4"` and `"4.0"` agree.
    """
    identity = {
        "account": account_label,
        "order_id": order_id,
        "client_order_id": client_order_id,
        "event": event,
        "status": status,
        "event_ts": to_utc(event_ts).isoformat() if event_ts is not None else None,
        "execution_id": execution_id,
        "qty": canonical_decimal(qty),
        "filled_qty": canonical_decimal(filled_qty),
        "filled_avg_price": canonical_decimal(filled_avg_price),
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
