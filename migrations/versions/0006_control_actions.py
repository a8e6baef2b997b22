"""Control actions: the audit of kill-switch and trading-state commands per account.

- `control_actions`: one row per (account, command_id) — who, why, when (from the control
  record), what was done (`action`: block, cancel, flatten, release, or the trading state) and
  how it ended (`status` started | done | failed, `result`, `error`). The unique key is what makes
  a cancel or flatten happen once: a worker restart replaying the compacted control topic finds
  the row and does nothing again.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from migrations.helpers import create_index_guarded, create_table_guarded, drop_index_guarded

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    create_table_guarded(
        "control_actions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("alpaca_account_label", sa.String(64), nullable=False),
        sa.Column("command_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("scope", sa.String(64), nullable=False),
        sa.Column("operator", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("1")),
        sa.Column("result", JSONB),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
    )
    create_index_guarded(
        "uq_control_actions_alpaca_account_label_command_id",
        "control_actions",
        ("alpaca_account_label", "command_id"),
        unique=True,
    )


def downgrade() -> None:
    drop_index_guarded("uq_control_actions_alpaca_account_label_command_id")
    op.drop_table("control_actions")
