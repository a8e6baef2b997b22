"""SQLAlchemy 2 models: the head schema, for migrations and `db check` only.

The hot path never uses the ORM (see `repository.py`). These classes describe what the database
must look like after the last migration; `db check` compares the live schema against them, so a
column the code needs but the database lacks (the seeds' `UndefinedColumn` incident) is caught
before a worker starts.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Index and constraint names are part of the contract: migrations and `db check` refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

LABEL = String(64)  # account labels
ORDER_ID = String(128)  # Alpaca order ids and client order ids
SYMBOL = String(32)  # "AAPL", "BTC/USD"
MONEY = Numeric(20, 8)
TS = DateTime(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def created_at() -> Mapped[datetime]:
    return mapped_column(TS, nullable=False, server_default=func.now())


def updated_at() -> Mapped[datetime]:
    return mapped_column(TS, nullable=False, server_default=func.now())


class Strategy(Base):
    """The strategy catalogue mirrored for reporting; decisions carry the id without an FK."""

    __tablename__ = "strategies"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    description: Mapped[str | None] = mapped_column(Text)
    strategy_type: Mapped[str] = mapped_column(String(64), nullable=False)
    version: Mapped[str] = mapped_column(String(32), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, server_default=text("true"))
    base_timeframe: Mapped[str] = mapped_column(String(16), nullable=False)
    universe: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'[]'"))
    params: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (Index("ix_strategies_enabled", "enabled"),)


class TradeDecision(Base):
    """One account-scoped decision; `decision_hash` is the broker client order id."""

    __tablename__ = "trade_decisions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    strategy_id: Mapped[str] = mapped_column(String(64), nullable=False)
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    symbol: Mapped[str] = mapped_column(SYMBOL, nullable=False)
    timeframe: Mapped[str] = mapped_column(String(16), nullable=False)
    action: Mapped[str] = mapped_column(String(8), nullable=False)
    decision_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(
        String(32), nullable=False, server_default=text("'planned'")
    )
    qty: Mapped[Decimal | None] = mapped_column(MONEY)
    notional: Mapped[Decimal | None] = mapped_column(MONEY)
    price: Mapped[Decimal | None] = mapped_column(MONEY)
    confidence: Mapped[float | None] = mapped_column(Double)
    rejection_reasons: Mapped[Any] = mapped_column(
        JSONB, nullable=False, server_default=text("'[]'")
    )
    decision_json: Mapped[Any] = mapped_column(JSONB, nullable=False, server_default=text("'{}'"))
    event_ts: Mapped[datetime] = mapped_column(TS, nullable=False)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()
    executed_at: Mapped[datetime | None] = mapped_column(TS)

    __table_args__ = (
        Index(
            "uq_trade_decisions_account_decision_hash",
            "alpaca_account_label",
            "decision_hash",
            unique=True,
        ),
        # Attribution of a v1 trade update by client order id alone (which account owns it).
        Index("ix_trade_decisions_decision_hash", "decision_hash"),
        Index(
            "ix_trade_decisions_account_status_created",
            "alpaca_account_label",
            "status",
            "created_at",
        ),
        Index("ix_trade_decisions_strategy_id", "strategy_id"),
    )


class Execution(Base):
    """One broker order of one account."""

    __tablename__ = "executions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    trade_decision_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("trade_decisions.id", ondelete="SET NULL")
    )
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    client_order_id: Mapped[str] = mapped_column(ORDER_ID, nullable=False)
    alpaca_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    symbol: Mapped[str] = mapped_column(SYMBOL, nullable=False)
    side: Mapped[str] = mapped_column(String(8), nullable=False)
    order_type: Mapped[str] = mapped_column(String(32), nullable=False)
    time_in_force: Mapped[str] = mapped_column(String(16), nullable=False)
    submitted_qty: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    filled_qty: Mapped[Decimal] = mapped_column(MONEY, nullable=False, server_default=text("0"))
    avg_fill_price: Mapped[Decimal | None] = mapped_column(MONEY)
    status: Mapped[str] = mapped_column(String(32), nullable=False)
    raw_order: Mapped[Any | None] = mapped_column(JSONB)
    last_event_ts: Mapped[datetime | None] = mapped_column(TS)
    # `system`: placed by a lane; `external`: a broker order adopted at start-up (0005).
    origin: Mapped[str] = mapped_column(String(16), nullable=False, server_default=text("'system'"))
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        Index(
            "uq_executions_account_client_order_id",
            "alpaca_account_label",
            "client_order_id",
            unique=True,
        ),
        Index(
            "uq_executions_account_alpaca_order_id",
            "alpaca_account_label",
            "alpaca_order_id",
            unique=True,
        ),
        Index("ix_executions_account_status", "alpaca_account_label", "status"),
        # The order feed finds the owner of an order id across accounts (0004).
        Index("ix_executions_client_order_id", "client_order_id"),
        Index("ix_executions_alpaca_order_id", "alpaca_order_id"),
        Index("ix_executions_trade_decision_id", "trade_decision_id"),
    )


class ExecutionOrderEvent(Base):
    """One order-feed event as received; `execution_id` stays NULL until the order is known."""

    __tablename__ = "execution_order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    source_topic: Mapped[str] = mapped_column(String(255), nullable=False)
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    execution_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("executions.id", ondelete="SET NULL")
    )
    trade_decision_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("trade_decisions.id", ondelete="SET NULL")
    )
    alpaca_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    client_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    symbol: Mapped[str | None] = mapped_column(SYMBOL)
    event_type: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str | None] = mapped_column(String(32))
    event_ts: Mapped[datetime | None] = mapped_column(TS)
    execution_id_alpaca: Mapped[str | None] = mapped_column(String(64))
    qty: Mapped[Decimal | None] = mapped_column(MONEY)
    price: Mapped[Decimal | None] = mapped_column(MONEY)
    filled_qty: Mapped[Decimal | None] = mapped_column(MONEY)
    filled_avg_price: Mapped[Decimal | None] = mapped_column(MONEY)
    raw: Mapped[Any] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        Index("uq_execution_order_events_event_fingerprint", "event_fingerprint", unique=True),
        Index(
            "uq_execution_order_events_source",
            "source_topic",
            "source_partition",
            "source_offset",
            unique=True,
        ),
        Index("ix_execution_order_events_execution_id", "execution_id"),
        # Late linking looks for unlinked events of one account by either order id.
        Index(
            "ix_execution_order_events_unlinked_client",
            "alpaca_account_label",
            "client_order_id",
            postgresql_where=text("execution_id IS NULL"),
        ),
        Index(
            "ix_execution_order_events_unlinked_order",
            "alpaca_account_label",
            "alpaca_order_id",
            postgresql_where=text("execution_id IS NULL"),
        ),
        # One stored fill per broker execution id of an account, whatever path brought it (0005).
        Index(
            "uq_execution_order_events_account_fill",
            "alpaca_account_label",
            "execution_id_alpaca",
            unique=True,
            postgresql_where=text(
                "execution_id_alpaca IS NOT NULL AND event_type IN ('fill', 'partial_fill')"
            ),
        ),
    )


class UnattributedOrderEvent(Base):
    """A v1 order-feed event no account could be found for yet (multi-account mode): held here,
    under no account, until its order appears under one (`streams.reconciliation.unattributed`).
    `raw` is the whole envelope as received, so the event is replayed exactly."""

    __tablename__ = "unattributed_order_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    event_fingerprint: Mapped[str] = mapped_column(String(64), nullable=False)
    source_topic: Mapped[str] = mapped_column(String(255), nullable=False)
    source_partition: Mapped[int | None] = mapped_column(Integer)
    source_offset: Mapped[int | None] = mapped_column(BigInteger)
    alpaca_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    client_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    symbol: Mapped[str | None] = mapped_column(SYMBOL)
    event_type: Mapped[str | None] = mapped_column(String(32))
    event_ts: Mapped[datetime | None] = mapped_column(TS)
    raw: Mapped[Any] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        Index("uq_unattributed_order_events_fingerprint", "event_fingerprint", unique=True),
        Index("ix_unattributed_order_events_client_order_id", "client_order_id"),
        Index("ix_unattributed_order_events_alpaca_order_id", "alpaca_order_id"),
    )


class AccountPin(Base):
    """The broker account number a label traded under first: another account's keys under the
    same label stop that lane instead of trading at the wrong account."""

    __tablename__ = "account_pins"

    account_label: Mapped[str] = mapped_column(LABEL, primary_key=True)
    broker_account_number: Mapped[str] = mapped_column(String(64), nullable=False)
    pinned_at: Mapped[datetime] = created_at()


class BrokerFillCursor(Base):
    """Per account: the page token of the last broker fill activity applied, and the position
    baseline (broker holdings beyond this system's executions when the cursor was created)."""

    __tablename__ = "broker_fill_cursors"

    account_label: Mapped[str] = mapped_column(LABEL, primary_key=True)
    page_token: Mapped[str | None] = mapped_column(ORDER_ID)
    baseline_positions: Mapped[Any] = mapped_column(
        JSONB, nullable=False, server_default=text("'{}'")
    )
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()


class OrderFillRefusal(Base):
    """A fill refused by the monotonic apply: its cumulative quantity exceeds the order's."""

    __tablename__ = "order_fill_refusals"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    execution_id: Mapped[int | None] = mapped_column(BigInteger)
    alpaca_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    client_order_id: Mapped[str | None] = mapped_column(ORDER_ID)
    reason: Mapped[str] = mapped_column(String(64), nullable=False)
    order_qty: Mapped[Decimal | None] = mapped_column(MONEY)
    filled_qty: Mapped[Decimal | None] = mapped_column(MONEY)
    status: Mapped[str | None] = mapped_column(String(32))
    event_ts: Mapped[datetime | None] = mapped_column(TS)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        Index(
            "uq_order_fill_refusals_account_execution_filled",
            "alpaca_account_label",
            "execution_id",
            "filled_qty",
            unique=True,
        ),
    )


class TradeCursor(Base):
    """Keyset position (ts, symbol, seq) of one reader per (source, account)."""

    __tablename__ = "trade_cursor"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    cursor_ts: Mapped[datetime] = mapped_column(TS, nullable=False)
    cursor_symbol: Mapped[str | None] = mapped_column(SYMBOL)
    cursor_seq: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        Index("uq_trade_cursor_source_account_label", "source", "account_label", unique=True),
    )


class PositionSnapshot(Base):
    """Account equity, cash, buying power and positions at one instant."""

    __tablename__ = "position_snapshots"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    as_of: Mapped[datetime] = mapped_column(TS, nullable=False)
    equity: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    cash: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    buying_power: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    positions: Mapped[Any] = mapped_column(JSONB, nullable=False)
    created_at: Mapped[datetime] = created_at()

    __table_args__ = (
        Index("ix_position_snapshots_account_as_of", "alpaca_account_label", "as_of"),
    )


class ExecutionTcaMetric(Base):
    """Transaction-cost analytics of one execution (`divergence_bps`: the seeds' drift column)."""

    __tablename__ = "execution_tca_metrics"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    execution_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("executions.id", ondelete="CASCADE"), nullable=False
    )
    trade_decision_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("trade_decisions.id", ondelete="SET NULL")
    )
    strategy_id: Mapped[str | None] = mapped_column(String(64))
    alpaca_account_label: Mapped[str | None] = mapped_column(LABEL)
    symbol: Mapped[str] = mapped_column(SYMBOL, nullable=False)
    side: Mapped[str] = mapped_column(String(8), nullable=False)
    arrival_price: Mapped[Decimal | None] = mapped_column(MONEY)
    avg_fill_price: Mapped[Decimal | None] = mapped_column(MONEY)
    filled_qty: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    signed_qty: Mapped[Decimal] = mapped_column(MONEY, nullable=False)
    slippage_bps: Mapped[Decimal | None] = mapped_column(MONEY)
    shortfall_notional: Mapped[Decimal | None] = mapped_column(MONEY)
    realized_shortfall_bps: Mapped[Decimal | None] = mapped_column(MONEY)
    divergence_bps: Mapped[Decimal | None] = mapped_column(MONEY)
    computed_at: Mapped[datetime] = mapped_column(TS, nullable=False, server_default=func.now())
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        Index("uq_execution_tca_metrics_execution_id", "execution_id", unique=True),
        Index("ix_execution_tca_metrics_account_label", "alpaca_account_label"),
    )


metadata = Base.metadata


class ControlAction(Base):
    """The audit of every control command (kill switch, trading state) per account, and the
    idempotency key of its action: a cancel or flatten is executed once per
    (account, command_id), by the worker that owns the lane, and never again after a restart
    replays the control topic."""

    __tablename__ = "control_actions"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    alpaca_account_label: Mapped[str] = mapped_column(LABEL, nullable=False)
    command_id: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    scope: Mapped[str] = mapped_column(LABEL, nullable=False)
    operator: Mapped[str] = mapped_column(String(128), nullable=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False)
    issued_at: Mapped[datetime] = mapped_column(TS, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, server_default=text("1"))
    result: Mapped[Any | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at()
    updated_at: Mapped[datetime] = updated_at()

    __table_args__ = (
        Index(
            "uq_control_actions_alpaca_account_label_command_id",
            "alpaca_account_label",
            "command_id",
            unique=True,
        ),
    )
