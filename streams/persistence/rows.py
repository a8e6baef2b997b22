"""Row types the repository reads and writes (frozen, slotted dataclasses: cheap, hot path)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any


@dataclass(frozen=True, slots=True)
class DecisionRow:
    """One account-scoped decision; identity = (account_label, decision_hash)."""

    account_label: str
    decision_hash: str
    strategy_id: str
    symbol: str
    timeframe: str
    action: str
    event_ts: datetime
    status: str = "planned"
    qty: Decimal | None = None
    notional: Decimal | None = None
    price: Decimal | None = None
    confidence: float | None = None
    rejection_reasons: tuple[str, ...] = ()
    decision_json: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingDecision:
    """A decision still planned/submitting: what a lane needs to resume or time it out."""

    id: int
    account_label: str
    decision_hash: str
    strategy_id: str
    symbol: str
    action: str
    status: str
    event_ts: datetime
    created_at: datetime
    updated_at: datetime
    decision_json: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One broker order of one account; identity = (account_label, client_order_id)."""

    account_label: str
    client_order_id: str
    symbol: str
    side: str
    order_type: str
    time_in_force: str
    submitted_qty: Decimal
    status: str
    alpaca_order_id: str | None = None
    filled_qty: Decimal = Decimal(0)
    avg_fill_price: Decimal | None = None
    raw_order: Mapping[str, Any] | None = None
    last_event_ts: datetime | None = None
    id: int | None = None  # set when read back from the database
    trade_decision_id: int | None = None


@dataclass(frozen=True, slots=True)
class OrderUpdateRow:
    """A broker order state (trade update or REST poll) to fold into an execution."""

    account_label: str
    status: str
    event_ts: datetime
    alpaca_order_id: str | None = None
    client_order_id: str | None = None
    filled_qty: Decimal | None = None
    filled_avg_price: Decimal | None = None
    raw_order: Mapping[str, Any] | None = None


class ApplyOutcome(str, enum.Enum):
    applied = "applied"  # the execution moved forward
    stale = "stale"  # the execution exists but the update would move it backwards (ignored)
    not_found = "not_found"  # no execution of this account has that order id / client id
    # refused: the cumulative fill is above the order quantity (recorded in order_fill_refusals)
    overfill = "overfill"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What `apply_order_update` did, and the execution's state afterwards."""

    outcome: ApplyOutcome
    execution_id: int | None = None
    status: str | None = None
    filled_qty: Decimal | None = None


@dataclass(frozen=True, slots=True)
class OrderEventRow:
    """One order-feed event, stored once (dedupe by fingerprint or source coordinates)."""

    event_fingerprint: str
    account_label: str
    source_topic: str
    event_ts: datetime | None
    source_partition: int | None = None
    source_offset: int | None = None
    alpaca_order_id: str | None = None
    client_order_id: str | None = None
    symbol: str | None = None
    event_type: str | None = None
    status: str | None = None
    execution_id_alpaca: str | None = None  # Alpaca's fill/execution id, not ours
    qty: Decimal | None = None
    price: Decimal | None = None
    filled_qty: Decimal | None = None
    filled_avg_price: Decimal | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CursorRow:
    """Keyset position of one (source, account) reader: (ts, symbol, seq)."""

    source: str
    account_label: str
    cursor_ts: datetime
    cursor_symbol: str
    cursor_seq: int
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PositionSnapshotRow:
    """Account equity, cash, buying power and positions at one instant."""

    account_label: str
    as_of: datetime
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    positions: Any = field(default_factory=list)  # JSON: list of position dicts


@dataclass(frozen=True, slots=True)
class StrategyRow:
    """A catalogue entry mirrored into `strategies` (reporting; decisions do not FK to it)."""

    id: str
    name: str
    strategy_type: str
    version: str
    enabled: bool
    base_timeframe: str
    universe: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str | None = None


@dataclass(frozen=True, slots=True)
class HeldEventRow:
    """A v1 order event no account could be found for yet (`unattributed_order_events`):
    `envelope` is the record as received, replayed once its owner is known."""

    event_fingerprint: str
    source_topic: str
    source_partition: int | None
    source_offset: int | None
    alpaca_order_id: str | None
    client_order_id: str | None
    symbol: str | None
    event_type: str | None
    event_ts: datetime | None
    envelope: Mapping[str, Any]
    id: int | None = None
    owners: tuple[str, ...] = ()  # accounts that own its order, when read back by the sweep


@dataclass(frozen=True, slots=True)
class FillCursorRow:
    """Per account: the last broker fill activity applied (None: read from the first one) and
    the position baseline (symbol → quantity the broker held beyond this system's executions
    when the cursor was created)."""

    account_label: str
    page_token: str | None
    baseline_positions: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SubmissionRow:
    """An order of one account that reached the broker (a `system` execution), for rebuilding
    the pre-trade windows: when its execution was recorded, and its notional."""

    decision_hash: str
    symbol: str
    side: str
    at: datetime
    notional: Decimal
