"""Broker trade updates as the forwarder publishes them (`torghut.trade-updates.v1` and `.v2`).

The envelope is camelCase JSON; `payload` is Alpaca's `trade_updates` `data` verbatim, with the
full order after the event. v1 carries no account (`accountLabel: null`, version 1); v2 sets
`accountLabel` and `payload.account_label` (version 2). Unknown fields are ignored everywhere so
that Alpaca and the forwarder can add fields; the fields the project uses are typed strictly
(money as Decimal, times as aware UTC datetimes).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer
from pydantic.alias_generators import to_camel

from schemas.common import to_utc


def iso_micros(value: datetime) -> str:
    """Alpaca's order timestamp form: UTC, microseconds, `Z`."""
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Broker times keep microseconds (the shared UtcDatetime serialises milliseconds).
BrokerDatetime = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(iso_micros, return_type=str, when_used="json"),
]

# Money as the broker sent it: NaN and infinities pass the schema on purpose, so that the
# numeric rule (streams/domain/trade_updates/validate.py) dead-letters them as `invalid_number`
# naming the field, next to negative quantities and prices.
BrokerMoney = Annotated[
    Decimal,
    Field(allow_inf_nan=True),
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]

TERMINAL_STATUSES = frozenset({"filled", "canceled", "expired", "rejected", "replaced"})


class AlpacaOrder(BaseModel):
    """The order inside a trade update: Alpaca's order object after the event."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str | None = Field(default=None, min_length=1)
    client_order_id: str | None = Field(default=None, min_length=1, max_length=128)
    symbol: str | None = None
    side: str | None = None
    qty: BrokerMoney | None = None
    notional: BrokerMoney | None = None
    filled_qty: BrokerMoney | None = None
    filled_avg_price: BrokerMoney | None = None
    limit_price: BrokerMoney | None = None
    stop_price: BrokerMoney | None = None
    status: str = Field(min_length=1)
    type: str | None = None
    order_type: str | None = None
    time_in_force: str | None = None
    asset_class: str | None = None
    extended_hours: bool | None = None
    created_at: BrokerDatetime | None = None
    updated_at: BrokerDatetime | None = None
    submitted_at: BrokerDatetime | None = None
    filled_at: BrokerDatetime | None = None
    canceled_at: BrokerDatetime | None = None
    expired_at: BrokerDatetime | None = None
    failed_at: BrokerDatetime | None = None
    replaced_at: BrokerDatetime | None = None
    replaced_by: str | None = None
    replaces: str | None = None
    # Order-level label: set by the forwarder (v2) or by a broker that tags orders.
    account_label: str | None = None

    @property
    def has_identity(self) -> bool:
        return bool(self.id or self.client_order_id)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class TradeUpdatePayload(BaseModel):
    """Alpaca `trade_updates` data: `price`/`qty` per execution, `order.filled_qty` cumulative."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    # Free text: Alpaca adds events (held, restated, ...) faster than enums can follow.
    event: str = Field(min_length=1)
    execution_id: str | None = None
    timestamp: BrokerDatetime | None = None
    price: BrokerMoney | None = None
    qty: BrokerMoney | None = None
    position_qty: BrokerMoney | None = None
    account_label: str | None = None
    order: AlpacaOrder


class TradeUpdateEnvelope(BaseModel):
    """The forwarder's envelope (camelCase on the wire; snake_case in Python)."""

    model_config = ConfigDict(
        extra="ignore",
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
    )

    ingest_ts: BrokerDatetime | None = None
    event_ts: BrokerDatetime | None = None
    feed: str = "alpaca"
    channel: str = "trade_updates"
    symbol: str | None = None
    # Per-symbol counter that restarts with the forwarder: never an ordering key.
    seq: int | None = None
    payload: TradeUpdatePayload
    account_label: str | None = None
    is_final: bool | None = None
    source: str | None = None
    version: int = 1

    @property
    def declared_account_label(self) -> str | None:
        """The label the event itself carries, in attribution order: payload, order, envelope.

        None for a v1 event: the order feed then falls back to the account owning the
        `client_order_id`, then to `TRADING_ACCOUNT_LABEL`.
        """
        for label in (
            self.payload.account_label,
            self.payload.order.account_label,
            self.account_label,
        ):
            if label:
                return label
        return None

    @property
    def event_time(self) -> datetime | None:
        """When the broker says it happened: payload timestamp, else order update, else envelope."""
        return self.payload.timestamp or self.payload.order.updated_at or self.event_ts

    @property
    def order_symbol(self) -> str | None:
        return self.payload.order.symbol or self.symbol
