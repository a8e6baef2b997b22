"""Broker reconciliation (issue #17 items 4-6): fill cursors, external orders, fills once.

- `broker_fill_cursors`: per account, the page token of the last broker fill activity applied
  (`GET /v2/account/activities/FILL` is read after it), and the position baseline: what the
  account held at the broker beyond this system's executions when the cursor was created
  (drift is measured against baseline + executions).
- `executions.origin`: `system` (placed by a lane) or `external` (an open broker order this
  system did not place, adopted at start-up reconciliation; never cancelled by it).
- `uq_execution_order_events_account_fill`: one stored fill per (account, broker execution id),
  whichever path brought it (trade update, fill replay).
- `order_fill_refusals`: over-fills refused by the monotonic apply (cumulative fill above the
  order quantity), one row per (account, order, cumulative fill).

Needed wherever this code runs, also in rollout phases 1-3 (which stop before the Phase 4
cleanup): the chain is 0001 → 0002 → 0004 → 0005 → 0003 (head). Phases 1-3 run at 0005.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from migrations.helpers import (
    add_column_guarded,
    count,
    create_index_guarded,
    create_table_guarded,
    drop_column_guarded,
    drop_index_guarded,
)

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")
FILL_EVENTS = "execution_id_alpaca IS NOT NULL AND event_type IN ('fill', 'partial_fill')"


def upgrade() -> None:
    create_table_guarded(
        "broker_fill_cursors",
        sa.Column("account_label", sa.String(64), primary_key=True),
        sa.Column("page_token", sa.String(128)),
        sa.Column("baseline_positions", JSONB, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    add_column_guarded(
        "executions",
        sa.Column("origin", sa.String(16), nullable=False, server_default=sa.text("'system'")),
    )
    duplicates = count(
        "SELECT count(*) FROM (SELECT 1 FROM execution_order_events WHERE "
        f"{FILL_EVENTS} GROUP BY alpaca_account_label, execution_id_alpaca "
        "HAVING count(*) > 1) d"
    )
    if duplicates:
        raise RuntimeError(
            f"execution_order_events holds {duplicates} broker execution ids stored more than "
            "once as fills; keep one row of each (the oldest) before upgrading to 0005"
        )
    create_index_guarded(
        "uq_execution_order_events_account_fill",
        "execution_order_events",
        ("alpaca_account_label", "execution_id_alpaca"),
        unique=True,
        where=FILL_EVENTS,
    )
    create_table_guarded(
        "order_fill_refusals",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("alpaca_account_label", sa.String(64), nullable=False),
        sa.Column("execution_id", sa.BigInteger),
        sa.Column("alpaca_order_id", sa.String(128)),
        sa.Column("client_order_id", sa.String(128)),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("order_qty", sa.Numeric(20, 8)),
        sa.Column("filled_qty", sa.Numeric(20, 8)),
        sa.Column("status", sa.String(32)),
        sa.Column("event_ts", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    create_index_guarded(
        "uq_order_fill_refusals_account_execution_filled",
        "order_fill_refusals",
        ("alpaca_account_label", "execution_id", "filled_qty"),
        unique=True,
    )


def downgrade() -> None:
    op.drop_table("order_fill_refusals")
    drop_index_guarded("uq_execution_order_events_account_fill")
    drop_column_guarded("executions", "origin")
    op.drop_table("broker_fill_cursors")
