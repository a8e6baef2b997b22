"""Alembic, configured in code: `upgrade`, `downgrade`, `current`, `heads` for the CLI and tests.

Alembic's async env runs its own event loop, so the commands run in a worker thread and the
async callers (faust commands, tests) are not blocked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from streams.persistence.dsn import asyncpg_dsn

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


def alembic_config(
    dsn: str | None = None,
    *,
    default_account_label: str | None = None,
    script_location: Path | None = None,
) -> Config:
    """A Config without an ini file; `dsn` None means DATABASE_URL from the settings."""
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location or MIGRATIONS_DIR))
    cfg.attributes["dsn"] = dsn
    cfg.attributes["default_account_label"] = default_account_label
    return cfg


async def upgrade(
    dsn: str | None,
    revision: str = "head",
    *,
    default_account_label: str | None = None,
    script_location: Path | None = None,
) -> None:
    cfg = alembic_config(
        dsn, default_account_label=default_account_label, script_location=script_location
    )
    await asyncio.to_thread(command.upgrade, cfg, revision)


async def downgrade(
    dsn: str | None,
    revision: str,
    *,
    default_account_label: str | None = None,
    script_location: Path | None = None,
) -> None:
    cfg = alembic_config(
        dsn, default_account_label=default_account_label, script_location=script_location
    )
    await asyncio.to_thread(command.downgrade, cfg, revision)


def heads(script_location: Path | None = None) -> tuple[str, ...]:
    """Head revisions of the migration scripts (exactly one when the chain is healthy)."""
    script = ScriptDirectory.from_config(alembic_config(script_location=script_location))
    return tuple(sorted(script.get_heads()))


async def current(dsn: str) -> tuple[str, ...]:
    """Revisions recorded in the database; empty when it was never migrated."""
    conn = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        exists = await conn.fetchval("SELECT to_regclass('alembic_version') IS NOT NULL")
        if not exists:
            return ()
        rows = await conn.fetch("SELECT version_num FROM alembic_version ORDER BY 1")
        return tuple(str(r["version_num"]) for r in rows)
    finally:
        await conn.close()
