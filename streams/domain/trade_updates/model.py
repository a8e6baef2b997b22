"""`TradeUpdate`: one broker trade update, normalised from v1 or v2 and attributed to an account.

It is also the record of the re-keyed topic (`Topics.account_updates` in `streams.topics`, key
`account_label`), next to `ReconcileRequest` (a forwarder reconnected: reconcile that account).
"""

from __future__ import annotations

import enum
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from schemas.common import Money, UtcDatetime
from schemas.trade_update import BrokerDatetime


class Attribution(str, enum.Enum):
    """Where the account of an update came from, in precedence order."""

    payload = "payload"  # v2 payload.account_label
    order = "order"  # order-level account_label
    envelope = "envelope"  # envelope accountLabel
    order_index = "order_index"  # the account that owns the client order id (or order id)
    database = "database"  # the owner of the order found in Postgres (decisions, executions)
    default = "default"  # single-account mode only: no evidence at all (counted as unattributed)


class TradeUpdate(BaseModel):
    """A broker order event of one account. Quantities and prices are Decimals.

    `qty`/`price` are the event's own execution; `filled_qty`/`filled_avg_price` are the order's
    cumulative state after the event (what the monotonic apply folds in).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["trade_update"] = "trade_update"
    account_label: str = Field(min_length=1)
    attribution: Attribution
    fingerprint: str
    event: str
    event_ts: BrokerDatetime
    order_id: str | None = None
    client_order_id: str | None = None
    status: str | None = None
    symbol: str | None = None
    side: str | None = None
    execution_id: str | None = None
    qty: Money | None = None
    price: Money | None = None
    position_qty: Money | None = None
    order_qty: Money | None = None
    filled_qty: Money | None = None
    filled_avg_price: Money | None = None
    version: int = 1
    source_topic: str
    source_partition: int | None = None
    source_offset: int | None = None
    raw: dict[str, Any] = Field(default_factory=dict)

    @property
    def cumulative_fill(self) -> Decimal:
        return self.filled_qty if self.filled_qty is not None else Decimal(0)


class ReconcileRequest(BaseModel):
    """Ask the worker that owns `account_label` to reconcile it now (e.g. after a reconnect)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["reconcile_request"] = "reconcile_request"
    account_label: str = Field(min_length=1)
    reason: str
    requested_at: UtcDatetime


AccountFeedRecord = Annotated[TradeUpdate | ReconcileRequest, Field(discriminator="kind")]
_RECORD = TypeAdapter(AccountFeedRecord)


def encode_record(record: TradeUpdate | ReconcileRequest) -> bytes:
    return record.model_dump_json().encode("utf-8")


def decode_record(raw: bytes) -> TradeUpdate | ReconcileRequest:
    """Raises `pydantic.ValidationError` on a malformed record."""
    return _RECORD.validate_json(raw)
