"""Multi-account isolation: account columns everywhere, account-scoped uniques.

- `executions.alpaca_account_label` NOT NULL, backfilled from the linked decision, else from the
  one decision whose hash is the client order id, else the default label.
- `execution_order_events.alpaca_account_label`, backfilled from its execution, else its decision,
  else the default label.
- `trade_cursor.account_label` (existing cursors belong to the default label).
- Account-scoped uniques replace the global ones (created first, so uniqueness never lapses).

The new columns keep a server default (the default label) until 0003, so a rolled-back
single-account image can still insert: the incident rollback keeps this schema in place.
The default label is `-x default_account_label=...`, else TRADING_ACCOUNT_LABEL.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from migrations.helpers import (
    add_column_guarded,
    count,
    create_index_guarded,
    default_account_label,
    drop_column_guarded,
    drop_index_guarded,
    drop_unique_on,
    execute,
    has_column,
)

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABEL = sa.String(64)

# (index name, table, columns) of the account-scoped uniques and the global ones they replace.
Unique = tuple[str, str, tuple[str, ...]]
SCOPED_UNIQUES: tuple[Unique, ...] = (
    (
        "uq_trade_decisions_account_decision_hash",
        "trade_decisions",
        ("alpaca_account_label", "decision_hash"),
    ),
    (
        "uq_executions_account_client_order_id",
        "executions",
        ("alpaca_account_label", "client_order_id"),
    ),
    (
        "uq_executions_account_alpaca_order_id",
        "executions",
        ("alpaca_account_label", "alpaca_order_id"),
    ),
    ("uq_trade_cursor_source_account_label", "trade_cursor", ("source", "account_label")),
)
GLOBAL_UNIQUES: tuple[Unique, ...] = (
    ("uq_trade_decisions_decision_hash", "trade_decisions", ("decision_hash",)),
    ("uq_executions_client_order_id", "executions", ("client_order_id",)),
    ("uq_executions_alpaca_order_id", "executions", ("alpaca_order_id",)),
    ("uq_trade_cursor_source", "trade_cursor", ("source",)),
)
# Plain indexes this revision adds: (name, table, columns, partial predicate).
INDEXES: tuple[tuple[str, str, tuple[str, ...], str | None], ...] = (
    ("ix_trade_decisions_decision_hash", "trade_decisions", ("decision_hash",), None),
    (
        "ix_trade_decisions_account_status_created",
        "trade_decisions",
        ("alpaca_account_label", "status", "created_at"),
        None,
    ),
    ("ix_executions_account_status", "executions", ("alpaca_account_label", "status"), None),
    (
        "ix_execution_order_events_unlinked_client",
        "execution_order_events",
        ("alpaca_account_label", "client_order_id"),
        "execution_id IS NULL",
    ),
    (
        "ix_execution_order_events_unlinked_order",
        "execution_order_events",
        ("alpaca_account_label", "alpaca_order_id"),
        "execution_id IS NULL",
    ),
)

# A decision matched by hash only when exactly one decision has it (drifted data may repeat).
_UNIQUE_HASH = (
    "NOT EXISTS (SELECT 1 FROM trade_decisions d2 "
    "WHERE d2.decision_hash = d.decision_hash AND d2.id <> d.id)"
)


def upgrade() -> None:
    label = default_account_label()
    _label_decisions(label)
    _label_executions(label)
    _label_order_events(label)
    _label_cursor(label)
    for name, table, columns in SCOPED_UNIQUES:
        create_index_guarded(name, table, columns, unique=True)
    for _, table, columns in GLOBAL_UNIQUES:
        drop_unique_on(table, columns)
    for name, table, columns, where in INDEXES:
        create_index_guarded(name, table, columns, where=where)


def _add_label_column(table: str, column: str) -> None:
    add_column_guarded(table, sa.Column(column, LABEL, nullable=True))


def _finish_label_column(table: str, column: str, label: str) -> None:
    """Rows still unlabelled get the default label; then NOT NULL with that default."""
    execute(f'UPDATE "{table}" SET "{column}" = :label WHERE "{column}" IS NULL', label=label)
    op.alter_column(table, column, nullable=False, server_default=label)


def _label_decisions(label: str) -> None:
    # Production decisions are already labelled; a drifted database may lack the column.
    if not has_column("trade_decisions", "alpaca_account_label"):
        _add_label_column("trade_decisions", "alpaca_account_label")
        _finish_label_column("trade_decisions", "alpaca_account_label", label)


def _label_executions(label: str) -> None:
    _add_label_column("executions", "alpaca_account_label")
    execute(
        """
        UPDATE executions e SET alpaca_account_label = d.alpaca_account_label
        FROM trade_decisions d
        WHERE e.alpaca_account_label IS NULL AND e.trade_decision_id = d.id
        """
    )
    execute(
        f"""
        UPDATE executions e SET alpaca_account_label = d.alpaca_account_label
        FROM trade_decisions d
        WHERE e.alpaca_account_label IS NULL AND e.trade_decision_id IS NULL
          AND d.decision_hash = e.client_order_id AND {_UNIQUE_HASH}
        """
    )
    _finish_label_column("executions", "alpaca_account_label", label)


def _label_order_events(label: str) -> None:
    _add_label_column("execution_order_events", "alpaca_account_label")
    execute(
        """
        UPDATE execution_order_events ev SET alpaca_account_label = e.alpaca_account_label
        FROM executions e
        WHERE ev.alpaca_account_label IS NULL AND ev.execution_id = e.id
        """
    )
    execute(
        """
        UPDATE execution_order_events ev SET alpaca_account_label = d.alpaca_account_label
        FROM trade_decisions d
        WHERE ev.alpaca_account_label IS NULL AND ev.trade_decision_id = d.id
        """
    )
    execute(
        f"""
        UPDATE execution_order_events ev SET alpaca_account_label = d.alpaca_account_label
        FROM trade_decisions d
        WHERE ev.alpaca_account_label IS NULL AND ev.client_order_id = d.decision_hash
          AND {_UNIQUE_HASH}
        """
    )
    _finish_label_column("execution_order_events", "alpaca_account_label", label)


def _label_cursor(label: str) -> None:
    _add_label_column("trade_cursor", "account_label")
    _finish_label_column("trade_cursor", "account_label", label)


def downgrade() -> None:
    _refuse_cross_account_duplicates()
    for name, table, columns in GLOBAL_UNIQUES:
        create_index_guarded(name, table, columns, unique=True)
    for name, *_ in SCOPED_UNIQUES:
        drop_index_guarded(name)
    for name, *_ in INDEXES:
        drop_index_guarded(name)
    drop_column_guarded("execution_order_events", "alpaca_account_label")
    drop_column_guarded("executions", "alpaca_account_label")
    drop_column_guarded("trade_cursor", "account_label")


def _refuse_cross_account_duplicates() -> None:
    """The global uniques cannot come back once two accounts share a key: say so, plainly."""
    for _, table, (column,) in GLOBAL_UNIQUES:
        shared = count(
            f'SELECT count(*) FROM (SELECT "{column}" FROM "{table}" '
            f'WHERE "{column}" IS NOT NULL GROUP BY 1 HAVING count(*) > 1) dup'
        )
        if shared:
            raise RuntimeError(
                f"cannot downgrade 0002: {shared} {table}.{column} value(s) are used by more "
                "than one account, so the global unique cannot be restored. Keep the "
                "multi-account schema (rollback rule) or resolve those rows first."
            )
