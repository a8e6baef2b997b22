"""Cleanup of single-account leftovers (apply after the Phase 4 cutover only).

- Drops the forwarder-seq columns (`executions.order_feed_last_seq`,
  `execution_order_events.feed_seq`): that seq restarts with the forwarder and must never order
  anything.
- Drops the unscoped legacy indexes superseded by account-scoped ones.
- Drops the server defaults of the account columns: from here on every writer names its account;
  an implicit account is a bug. (After this revision the pre-multi-account image can no longer
  insert executions: roll back only to a multi-account-aware image.)

Revision ID: 0003
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.helpers import (
    add_column_guarded,
    create_index_guarded,
    default_account_label,
    drop_column_guarded,
    drop_index_guarded,
)

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEGACY_COLUMNS = (("executions", "order_feed_last_seq"), ("execution_order_events", "feed_seq"))
LEGACY_INDEXES = (
    ("ix_trade_decisions_status", "trade_decisions", ("status",)),
    ("ix_executions_status", "executions", ("status",)),
    ("ix_execution_order_events_alpaca_order_id", "execution_order_events", ("alpaca_order_id",)),
    ("ix_execution_order_events_client_order_id", "execution_order_events", ("client_order_id",)),
)
ACCOUNT_COLUMNS = (
    ("trade_decisions", "alpaca_account_label"),
    ("executions", "alpaca_account_label"),
    ("execution_order_events", "alpaca_account_label"),
    ("trade_cursor", "account_label"),
)


def upgrade() -> None:
    for table, column in LEGACY_COLUMNS:
        drop_column_guarded(table, column)
    for name, _, _ in LEGACY_INDEXES:
        drop_index_guarded(name)
    for table, column in ACCOUNT_COLUMNS:
        op.alter_column(table, column, server_default=None)


def downgrade() -> None:
    for table, column in LEGACY_COLUMNS:
        add_column_guarded(table, sa.Column(column, sa.BigInteger, nullable=True))
    for name, table, columns in LEGACY_INDEXES:
        create_index_guarded(name, table, columns)
    label = default_account_label()
    for table, column in ACCOUNT_COLUMNS:
        # The baseline defaulted decisions to 'paper'; 0002 gave the others the default label.
        default = "paper" if table == "trade_decisions" else label
        op.alter_column(table, column, server_default=default)
