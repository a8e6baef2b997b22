"""Input integrity: unattributed order events held under no account, and account pins.

- `unattributed_order_events`: a v1 trade update whose account cannot be found yet (multi-account
  mode) is kept here, under no account, never under a default label (`raw` is the whole envelope
  as received); it moves to `execution_order_events` under its account once its order is known.
- `ix_executions_client_order_id`, `ix_executions_alpaca_order_id`: the order feed finds the
  account that owns an order id (any account: the answer *is* the account) without a scan.
- `account_pins`: the broker account number each label first traded under.

Needed from rollout phase 1 on, so it comes before the Phase 4 cleanup: the chain is
0001 → 0002 → 0004 → 0003 (head). Phases 1-3 run at 0004.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from migrations.helpers import (
    count,
    create_index_guarded,
    create_table_guarded,
    drop_index_guarded,
    has_table,
)

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    create_table_guarded(
        "unattributed_order_events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_fingerprint", sa.String(64), nullable=False),
        sa.Column("source_topic", sa.String(255), nullable=False),
        sa.Column("source_partition", sa.Integer),
        sa.Column("source_offset", sa.BigInteger),
        sa.Column("alpaca_order_id", sa.String(128)),
        sa.Column("client_order_id", sa.String(128)),
        sa.Column("symbol", sa.String(32)),
        sa.Column("event_type", sa.String(32)),
        sa.Column("event_ts", sa.DateTime(timezone=True)),
        sa.Column("raw", JSONB, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    create_index_guarded(
        "uq_unattributed_order_events_fingerprint",
        "unattributed_order_events",
        ("event_fingerprint",),
        unique=True,
    )
    create_index_guarded(
        "ix_unattributed_order_events_client_order_id",
        "unattributed_order_events",
        ("client_order_id",),
    )
    create_index_guarded(
        "ix_unattributed_order_events_alpaca_order_id",
        "unattributed_order_events",
        ("alpaca_order_id",),
    )
    create_index_guarded("ix_executions_client_order_id", "executions", ("client_order_id",))
    create_index_guarded("ix_executions_alpaca_order_id", "executions", ("alpaca_order_id",))
    create_table_guarded(
        "account_pins",
        sa.Column("account_label", sa.String(64), primary_key=True),
        sa.Column("broker_account_number", sa.String(64), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )


def downgrade() -> None:
    if has_table("unattributed_order_events") and count(
        "SELECT count(*) FROM unattributed_order_events"
    ):
        raise RuntimeError(
            "unattributed_order_events still holds events no account could be found for; "
            "resolve them (or delete them knowingly) before downgrading below 0004"
        )
    op.drop_table("unattributed_order_events")
    drop_index_guarded("ix_executions_client_order_id")
    drop_index_guarded("ix_executions_alpaca_order_id")
    op.drop_table("account_pins")
