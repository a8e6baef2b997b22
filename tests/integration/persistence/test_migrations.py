"""The Alembic chain on real Postgres: empty → head, 0001 data → head (backfills, scoped uniques),
down to 0001 and up again, and `db check` naming what is wrong."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from streams.persistence import migrate
from streams.persistence.dbcheck import check_database

pytestmark = pytest.mark.integration

TABLES = {
    "strategies",
    "trade_decisions",
    "executions",
    "execution_order_events",
    "trade_cursor",
    "position_snapshots",
    "execution_tca_metrics",
    "unattributed_order_events",
    "account_pins",
    "control_actions",
    "broker_fill_cursors",
    "order_fill_refusals",
}
H1, H2, H3, H4 = (c * 64 for c in "1234")


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(pg_dsn)
    yield conn
    await conn.close()


async def tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r[0] for r in rows} - {"alembic_version"}


async def test_empty_to_head_matches_the_models_and_downgrades_to_base(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    await migrate.upgrade(pg_dsn, "head", default_account_label="paper")
    assert await migrate.current(pg_dsn) == migrate.heads() == ("0003",)
    assert await tables(db) == TABLES
    result = await check_database(pg_dsn, multi_account_enabled=True)
    assert result.problems == ()
    await migrate.downgrade(pg_dsn, "base")
    assert await tables(db) == set()


async def test_upgrade_repairs_a_drifted_unversioned_production_database(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    # Production: the tables exist, Alembic's record does not match, a column is missing and a
    # global unique is a constraint under another name.
    await migrate.upgrade(pg_dsn, "0001", default_account_label="paper")
    await db.execute(
        "DROP TABLE alembic_version;"
        "ALTER TABLE execution_tca_metrics DROP COLUMN divergence_bps;"
        "DROP INDEX uq_executions_client_order_id;"
        "ALTER TABLE executions ADD CONSTRAINT executions_client_order_id_key"
        " UNIQUE (client_order_id)"
    )
    await migrate.upgrade(pg_dsn, "head", default_account_label="paper")
    assert (await check_database(pg_dsn, multi_account_enabled=True)).problems == ()


SINGLE_ACCOUNT_DATA = f"""
INSERT INTO trade_decisions (id, strategy_id, alpaca_account_label, symbol, timeframe, action,
                             decision_hash, status, event_ts)
VALUES (101, 's', 'live', 'AAPL', '1Sec', 'buy', '{H1}', 'filled', now()),
       (102, 's', 'live', 'MSFT', '1Sec', 'buy', '{H2}', 'submitted', now());
INSERT INTO executions (id, trade_decision_id, client_order_id, alpaca_order_id, symbol, side,
                        order_type, time_in_force, submitted_qty, status, order_feed_last_seq)
VALUES (110, 101, '{H1}', 'ord-1', 'AAPL', 'buy', 'market', 'day', 1, 'filled', 7),
       (111, NULL, '{H2}', 'ord-2', 'MSFT', 'buy', 'market', 'day', 1, 'new', NULL),
       (112, NULL, 'manual-1', 'ord-3', 'TSLA', 'sell', 'limit', 'gtc', 2, 'new', NULL);
INSERT INTO execution_order_events (event_fingerprint, source_topic, source_partition,
                                    source_offset, execution_id, trade_decision_id,
                                    client_order_id, raw, feed_seq)
VALUES ('fp-exec', 'v1', 0, 1, 110, NULL, '{H1}', '{{}}', 3),
       ('fp-dec', 'v1', 0, 2, NULL, 102, '{H2}', '{{}}', 4),
       ('fp-hash', 'v1', 0, 3, NULL, NULL, '{H1}', '{{}}', 5),
       ('fp-none', 'v1', 0, 4, NULL, NULL, 'unknown', '{{}}', 6);
INSERT INTO trade_cursor (source, cursor_ts, cursor_symbol, cursor_seq)
VALUES ('clickhouse', now(), 'AAPL', 9);
"""


async def test_upgrade_from_single_account_baseline_backfills_and_scopes_uniques(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    await migrate.upgrade(pg_dsn, "0001", default_account_label="paper")
    await db.execute(SINGLE_ACCOUNT_DATA)
    with pytest.raises(asyncpg.UniqueViolationError):  # the baseline's global unique
        await db.execute(
            f"INSERT INTO trade_decisions (strategy_id, alpaca_account_label, symbol, timeframe,"
            f" action, decision_hash, event_ts) VALUES ('s','paper','X','1Sec','buy','{H1}',now())"
        )
    assert (await check_database(pg_dsn, multi_account_enabled=True)).problems

    await migrate.upgrade(pg_dsn, "head", default_account_label="paper")

    labels = await db.fetch("SELECT id, alpaca_account_label FROM executions ORDER BY id")
    # linked decision → its label; hash-matched decision → its label; neither → default.
    assert [tuple(r) for r in labels] == [(110, "live"), (111, "live"), (112, "paper")]
    events = await db.fetch(
        "SELECT event_fingerprint, alpaca_account_label FROM execution_order_events ORDER BY id"
    )
    assert [tuple(r) for r in events] == [
        ("fp-exec", "live"),
        ("fp-dec", "live"),
        ("fp-hash", "live"),
        ("fp-none", "paper"),
    ]
    assert await db.fetchval("SELECT account_label FROM trade_cursor") == "paper"
    assert not await db.fetchval(
        "SELECT count(*) FROM information_schema.columns WHERE column_name = 'feed_seq'"
    )

    # Scoped uniques: the same keys in another account are fine, twice in one account is not.
    await insert_second_account(db)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO executions (alpaca_account_label, client_order_id, symbol, side,"
            " order_type, time_in_force, submitted_qty, status)"
            f" VALUES ('live', '{H2}', 'MSFT', 'buy', 'market', 'day', 1, 'new')"
        )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO trade_decisions (strategy_id, alpaca_account_label, symbol, timeframe,"
            f" action, decision_hash, event_ts) VALUES ('s','live','X','1Sec','buy','{H1}',now())"
        )
    assert (await check_database(pg_dsn, multi_account_enabled=True)).problems == ()

    # Down to 0001 refuses while two accounts share keys (the global uniques cannot return)...
    with pytest.raises(RuntimeError, match="used by more than one account"):
        await migrate.downgrade(pg_dsn, "0001", default_account_label="paper")
    await db.execute(
        "DELETE FROM trade_decisions WHERE alpaca_account_label = 'acct-b';"
        "DELETE FROM executions WHERE alpaca_account_label = 'acct-b';"
        "DELETE FROM trade_cursor WHERE account_label = 'acct-b'"
    )
    # ...and succeeds once they do not; then up again.
    await migrate.downgrade(pg_dsn, "0001", default_account_label="paper")
    assert await migrate.current(pg_dsn) == ("0001",)
    assert await db.fetchval("SELECT count(*) FROM executions") == 3
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            "INSERT INTO trade_cursor (source, cursor_ts) VALUES ('clickhouse', now())"
        )
    await migrate.upgrade(pg_dsn, "head", default_account_label="paper")
    assert (await check_database(pg_dsn, multi_account_enabled=True)).problems == ()
    # The backfill re-derived the same labels after the round trip.
    labels = await db.fetch("SELECT id, alpaca_account_label FROM executions ORDER BY id")
    assert [tuple(r) for r in labels] == [(110, "live"), (111, "live"), (112, "paper")]


async def insert_second_account(db: asyncpg.Connection) -> None:
    await db.execute(
        "INSERT INTO trade_decisions (strategy_id, alpaca_account_label, symbol, timeframe,"
        f" action, decision_hash, event_ts) VALUES ('s','acct-b','AAPL','1Sec','buy','{H1}',now());"
        "INSERT INTO executions (alpaca_account_label, client_order_id, alpaca_order_id, symbol,"
        " side, order_type, time_in_force, submitted_qty, status)"
        f" VALUES ('acct-b', '{H1}', 'ord-1', 'AAPL', 'buy', 'market', 'day', 1, 'new');"
        "INSERT INTO trade_cursor (source, account_label, cursor_ts)"
        " VALUES ('clickhouse', 'acct-b', now())"
    )


async def test_db_check_names_a_dropped_column_and_index_and_a_lagging_database(
    pg_dsn: str, db: asyncpg.Connection
) -> None:
    await migrate.upgrade(pg_dsn, "0002", default_account_label="paper")
    lagging = await check_database(pg_dsn, multi_account_enabled=False)
    assert any("database is at 0002 but the head is 0003" in p for p in lagging.problems)

    await migrate.upgrade(pg_dsn, "head", default_account_label="paper")
    await db.execute(
        "ALTER TABLE execution_tca_metrics DROP COLUMN divergence_bps;"
        "DROP INDEX ix_executions_account_status;"
        "DROP INDEX uq_executions_account_client_order_id;"
        "CREATE UNIQUE INDEX legacy_cursor_source ON trade_cursor (source)"
    )
    result = await check_database(pg_dsn, multi_account_enabled=True)
    problems = "\n".join(result.problems)
    assert "missing column execution_tca_metrics.divergence_bps" in problems
    assert "missing index ix_executions_account_status" in problems
    assert "missing unique index uq_executions_account_client_order_id" in problems
    assert "lacks the account-scoped unique (alpaca_account_label, client_order_id)" in problems
    assert "trade_cursor keeps the global unique (source)" in problems
    assert "unexpected unique index legacy_cursor_source" in problems


async def test_db_check_names_a_second_head(pg_dsn: str, tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.MIGRATIONS_DIR, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "0099_branch.py").write_text(
        'revision = "0099"\ndown_revision = "0002"\nbranch_labels = None\ndepends_on = None\n\n'
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    assert migrate.heads(scripts) == ("0003", "0099")
    await migrate.upgrade(pg_dsn, "0003", default_account_label="paper", script_location=scripts)
    result = await check_database(pg_dsn, multi_account_enabled=False, script_location=scripts)
    assert result.problems == (
        "migrations have 2 heads (0003, 0099): add a merge revision so there is exactly one",
    )
