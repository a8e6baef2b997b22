"""`faust -A streams.app db ...` as an operator runs it: exit codes and named problems."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def faust_db(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": dsn, "TRADING_MULTI_ACCOUNT_ENABLED": "true"}
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streams.app", "db", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


async def test_db_upgrade_then_check_names_a_dropped_column(pg_dsn: str) -> None:
    upgraded = faust_db(pg_dsn, "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr[-2000:]
    assert "database at 0003" in upgraded.stdout

    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("ALTER TABLE execution_tca_metrics DROP COLUMN divergence_bps")
    finally:
        await conn.close()
    checked = faust_db(pg_dsn, "check")
    assert checked.returncode == 1
    assert "PROBLEM: missing column execution_tca_metrics.divergence_bps" in checked.stdout
    assert "postgres@" not in checked.stdout + checked.stderr  # the DSN never leaks


async def test_db_check_at_a_phase_revision(pg_dsn: str) -> None:
    """Rollout phases 1-3 keep the Phase 4 cleanup (0003) back: `db check --revision 0006`."""
    assert faust_db(pg_dsn, "upgrade", "--revision", "0006").returncode == 0
    at_phase = faust_db(pg_dsn, "check", "--revision", "0006")
    assert at_phase.returncode == 0, at_phase.stdout + at_phase.stderr
    assert "ok: database at 0006" in at_phase.stdout
    at_head = faust_db(pg_dsn, "check")
    assert at_head.returncode == 1
    assert "database is at 0006 but the head is 0003" in at_head.stdout
