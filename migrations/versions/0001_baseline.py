"""Baseline: today's single-account production schema, plus the Phase 0 drift repair.

Global uniques on `trade_decisions.decision_hash`, `executions.client_order_id`,
`executions.alpaca_order_id` and `trade_cursor.source`, as production has them. Every table and
column is created only when missing, so this revision also runs against the production database
(which has these tables, but drifted: `execution_tca_metrics.divergence_bps` was absent, the
seeds' `UndefinedColumn` incident) and repairs it instead of failing.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.schema import SchemaItem

from migrations.helpers import create_index_guarded, create_table_guarded

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABEL = sa.String(64)
ORDER_ID = sa.String(128)
SYMBOL = sa.String(32)
MONEY = sa.Numeric(20, 8)
TS = sa.DateTime(timezone=True)


def _id(table: str) -> list[SchemaItem]:
    return [
        sa.Column("id", sa.BigInteger, autoincrement=True, nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    ]


def _created() -> sa.Column[object]:
    return sa.Column("created_at", TS, nullable=False, server_default=sa.func.now())


def _updated() -> sa.Column[object]:
    return sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now())


def upgrade() -> None:
    _strategies()
    _trade_decisions()
    _executions()
    _execution_order_events()
    _trade_cursor()
    _position_snapshots()
    _execution_tca_metrics()


def _strategies() -> None:
    create_table_guarded(
        "strategies",
        sa.Column("id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_strategies"),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text),
        sa.Column("strategy_type", sa.String(64), nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.text("true")),
        sa.Column("base_timeframe", sa.String(16), nullable=False),
        sa.Column("universe", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("params", JSONB, nullable=False, server_default=sa.text("'{}'")),
        _created(),
        _updated(),
    )
    create_index_guarded("ix_strategies_enabled", "strategies", ["enabled"])


def _trade_decisions() -> None:
    create_table_guarded(
        "trade_decisions",
        *_id("trade_decisions"),
        sa.Column("strategy_id", sa.String(64), nullable=False),
        # Production already labelled decisions (one label only, defaulted).
        sa.Column("alpaca_account_label", LABEL, nullable=False, server_default="paper"),
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("timeframe", sa.String(16), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("decision_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False, server_default="planned"),
        sa.Column("qty", MONEY),
        sa.Column("notional", MONEY),
        sa.Column("price", MONEY),
        sa.Column("confidence", sa.Double),
        sa.Column("rejection_reasons", JSONB, nullable=False, server_default=sa.text("'[]'")),
        sa.Column("decision_json", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("event_ts", TS, nullable=False),
        _created(),
        _updated(),
        sa.Column("executed_at", TS),
    )
    create_index_guarded(
        "uq_trade_decisions_decision_hash", "trade_decisions", ["decision_hash"], unique=True
    )
    create_index_guarded("ix_trade_decisions_status", "trade_decisions", ["status"])
    create_index_guarded("ix_trade_decisions_strategy_id", "trade_decisions", ["strategy_id"])


def _executions() -> None:
    create_table_guarded(
        "executions",
        *_id("executions"),
        sa.Column(
            "trade_decision_id",
            sa.BigInteger,
            sa.ForeignKey(
                "trade_decisions.id",
                ondelete="SET NULL",
                name="fk_executions_trade_decision_id_trade_decisions",
            ),
        ),
        sa.Column("client_order_id", ORDER_ID, nullable=False),
        sa.Column("alpaca_order_id", ORDER_ID),
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("order_type", sa.String(32), nullable=False),
        sa.Column("time_in_force", sa.String(16), nullable=False),
        sa.Column("submitted_qty", MONEY, nullable=False),
        sa.Column("filled_qty", MONEY, nullable=False, server_default=sa.text("0")),
        sa.Column("avg_fill_price", MONEY),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("raw_order", JSONB),
        sa.Column("last_event_ts", TS),
        # Legacy: the forwarder's per-process seq, which restarts (dropped by 0003).
        sa.Column("order_feed_last_seq", sa.BigInteger),
        _created(),
        _updated(),
    )
    create_index_guarded(
        "uq_executions_client_order_id", "executions", ["client_order_id"], unique=True
    )
    create_index_guarded(
        "uq_executions_alpaca_order_id", "executions", ["alpaca_order_id"], unique=True
    )
    create_index_guarded("ix_executions_status", "executions", ["status"])
    create_index_guarded("ix_executions_trade_decision_id", "executions", ["trade_decision_id"])


def _execution_order_events() -> None:
    create_table_guarded(
        "execution_order_events",
        *_id("execution_order_events"),
        sa.Column("event_fingerprint", sa.String(64), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer),
        sa.Column("source_offset", sa.BigInteger),
        sa.Column(
            "execution_id",
            sa.BigInteger,
            sa.ForeignKey(
                "executions.id",
                ondelete="SET NULL",
                name="fk_execution_order_events_execution_id_executions",
            ),
        ),
        sa.Column(
            "trade_decision_id",
            sa.BigInteger,
            sa.ForeignKey(
                "trade_decisions.id",
                ondelete="SET NULL",
                name="fk_execution_order_events_trade_decision_id_trade_decisions",
            ),
        ),
        sa.Column("alpaca_order_id", ORDER_ID),
        sa.Column("client_order_id", ORDER_ID),
        sa.Column("symbol", SYMBOL),
        sa.Column("event_type", sa.String(32)),
        sa.Column("status", sa.String(32)),
        sa.Column("event_ts", TS),
        sa.Column("execution_id_alpaca", sa.String(64)),
        sa.Column("qty", MONEY),
        sa.Column("price", MONEY),
        sa.Column("filled_qty", MONEY),
        sa.Column("filled_avg_price", MONEY),
        sa.Column("raw", JSONB, nullable=False),
        # Legacy: the forwarder's per-process seq (dropped by 0003).
        sa.Column("feed_seq", sa.BigInteger),
        _created(),
    )
    table = "execution_order_events"
    create_index_guarded(
        "uq_execution_order_events_event_fingerprint", table, ["event_fingerprint"], unique=True
    )
    create_index_guarded(
        "uq_execution_order_events_source",
        table,
        ["source_topic", "source_partition", "source_offset"],
        unique=True,
    )
    create_index_guarded("ix_execution_order_events_execution_id", table, ["execution_id"])
    create_index_guarded("ix_execution_order_events_alpaca_order_id", table, ["alpaca_order_id"])
    create_index_guarded("ix_execution_order_events_client_order_id", table, ["client_order_id"])


def _trade_cursor() -> None:
    create_table_guarded(
        "trade_cursor",
        *_id("trade_cursor"),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("cursor_ts", TS, nullable=False),
        sa.Column("cursor_symbol", SYMBOL),
        sa.Column("cursor_seq", sa.BigInteger),
        _updated(),
    )
    create_index_guarded("uq_trade_cursor_source", "trade_cursor", ["source"], unique=True)


def _position_snapshots() -> None:
    create_table_guarded(
        "position_snapshots",
        *_id("position_snapshots"),
        sa.Column("alpaca_account_label", LABEL, nullable=False),
        sa.Column("as_of", TS, nullable=False),
        sa.Column("equity", MONEY, nullable=False),
        sa.Column("cash", MONEY, nullable=False),
        sa.Column("buying_power", MONEY, nullable=False),
        sa.Column("positions", JSONB, nullable=False),
        _created(),
    )
    create_index_guarded(
        "ix_position_snapshots_account_as_of",
        "position_snapshots",
        ["alpaca_account_label", "as_of"],
    )


def _execution_tca_metrics() -> None:
    create_table_guarded(
        "execution_tca_metrics",
        *_id("execution_tca_metrics"),
        sa.Column(
            "execution_id",
            sa.BigInteger,
            sa.ForeignKey(
                "executions.id",
                ondelete="CASCADE",
                name="fk_execution_tca_metrics_execution_id_executions",
            ),
            nullable=False,
        ),
        sa.Column(
            "trade_decision_id",
            sa.BigInteger,
            sa.ForeignKey(
                "trade_decisions.id",
                ondelete="SET NULL",
                name="fk_execution_tca_metrics_trade_decision_id_trade_decisions",
            ),
        ),
        sa.Column("strategy_id", sa.String(64)),
        sa.Column("alpaca_account_label", LABEL),
        sa.Column("symbol", SYMBOL, nullable=False),
        sa.Column("side", sa.String(8), nullable=False),
        sa.Column("arrival_price", MONEY),
        sa.Column("avg_fill_price", MONEY),
        sa.Column("filled_qty", MONEY, nullable=False),
        sa.Column("signed_qty", MONEY, nullable=False),
        sa.Column("slippage_bps", MONEY),
        sa.Column("shortfall_notional", MONEY),
        sa.Column("realized_shortfall_bps", MONEY),
        # Absent in the drifted production database (Phase 0 repair): added when missing.
        sa.Column("divergence_bps", MONEY),
        sa.Column("computed_at", TS, nullable=False, server_default=sa.func.now()),
        _created(),
        _updated(),
    )
    table = "execution_tca_metrics"
    create_index_guarded(
        "uq_execution_tca_metrics_execution_id", table, ["execution_id"], unique=True
    )
    create_index_guarded("ix_execution_tca_metrics_account_label", table, ["alpaca_account_label"])


def downgrade() -> None:
    for table in (
        "execution_tca_metrics",
        "position_snapshots",
        "trade_cursor",
        "execution_order_events",
        "executions",
        "trade_decisions",
        "strategies",
    ):
        op.execute(f'DROP TABLE IF EXISTS "{table}"')
