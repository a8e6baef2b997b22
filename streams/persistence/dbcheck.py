"""`db check`: is this database safe for this code? Every problem is named, none is fatal alone.

Checks: the migration chain has one head; the database is at that head; the live schema has
every table, column, index and type the models define (a column the code uses but the database
lacks was the seeds' `UndefinedColumn` incident); and, with multi-account on, the account-scoped
uniques are active and the global ones gone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

from streams.persistence import migrate
from streams.persistence.dsn import async_engine
from streams.persistence.models import metadata

log = logging.getLogger(__name__)

# Multi-account needs these uniques (table, columns) and must not keep the global ones.
SCOPED_UNIQUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("trade_decisions", ("alpaca_account_label", "decision_hash")),
    ("executions", ("alpaca_account_label", "client_order_id")),
    ("executions", ("alpaca_account_label", "alpaca_order_id")),
    ("trade_cursor", ("source", "account_label")),
)
GLOBAL_UNIQUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("trade_decisions", ("decision_hash",)),
    ("executions", ("client_order_id",)),
    ("executions", ("alpaca_order_id",)),
    ("trade_cursor", ("source",)),
)
ACCOUNT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("trade_decisions", "alpaca_account_label"),
    ("executions", "alpaca_account_label"),
    ("execution_order_events", "alpaca_account_label"),
    ("trade_cursor", "account_label"),
)


@dataclass(frozen=True)
class CheckResult:
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    heads: tuple[str, ...]
    current: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


async def check_database(
    dsn: str,
    *,
    multi_account_enabled: bool,
    script_location: Path | None = None,
    target: str | None = None,
) -> CheckResult:
    """`target`: the revision the database must be at (default: the single head), e.g. 0002
    while a rollout phase keeps the Phase 4 cleanup migration back. Runs every check against
    `dsn`; a failure to connect is itself a named problem."""
    heads = migrate.heads(script_location)
    target = None if target == "head" else target
    problems = list(_head_problems(heads))
    notes: list[str] = []
    current: tuple[str, ...] = ()
    engine = async_engine(dsn, poolclass=sa.pool.NullPool)
    try:
        async with engine.connect() as conn:
            current, live_problems, live_notes = await conn.run_sync(
                _check_live, (target,) if target else heads, multi_account_enabled
            )
        problems += live_problems
        notes += live_notes
    except (OSError, sa.exc.SQLAlchemyError) as exc:
        # The class name only: a driver message may echo the DSN (and its password).
        problems.append(f"database unreachable: {type(exc).__name__}")
    finally:
        await engine.dispose()
    return CheckResult(tuple(problems), tuple(notes), heads, current)


def _head_problems(heads: Sequence[str]) -> Iterable[str]:
    if len(heads) > 1:
        yield (
            f"migrations have {len(heads)} heads ({', '.join(heads)}): "
            "add a merge revision so there is exactly one"
        )
    elif not heads:
        yield "migrations have no head revision"


def _check_live(
    conn: Connection, heads: Sequence[str], multi_account_enabled: bool
) -> tuple[tuple[str, ...], list[str], list[str]]:
    ctx = MigrationContext.configure(
        conn, opts={"include_name": _include_name, "compare_type": True}
    )
    current = tuple(sorted(ctx.get_current_heads()))
    problems = list(_revision_problems(current, heads))
    drift, notes = _drift(ctx)
    problems += drift
    if multi_account_enabled:
        problems += _multi_account_problems(conn)
    return current, problems, notes


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    return type_ != "table" or name in metadata.tables


def _revision_problems(current: Sequence[str], heads: Sequence[str]) -> Iterable[str]:
    if not current:
        yield "database has no Alembic revision: run `faust -A streams.app db upgrade`"
    elif len(heads) == 1 and tuple(current) != tuple(heads):
        yield (
            f"database is at {', '.join(current)} but the head is {heads[0]}: "
            "run `faust -A streams.app db upgrade`"
        )


def _drift(ctx: MigrationContext) -> tuple[list[str], list[str]]:
    """Model-vs-database differences: what the code needs and lacks is a problem."""
    problems: list[str] = []
    notes: list[str] = []
    for diff in _flatten(compare_metadata(ctx, metadata)):
        problem, note = _describe(diff)
        if problem:
            problems.append(problem)
        if note:
            notes.append(note)
    return problems, notes


def _flatten(diffs: Iterable[Any]) -> Iterable[tuple[Any, ...]]:
    for diff in diffs:
        if isinstance(diff, list):  # column modifications come grouped
            yield from diff
        else:
            yield diff


def _describe(diff: tuple[Any, ...]) -> tuple[str | None, str | None]:
    kind = diff[0]
    if kind == "add_table":
        return f"missing table {diff[1].name}", None
    if kind == "add_column":
        return f"missing column {diff[2]}.{diff[3].name}", None
    if kind == "add_index":
        index = diff[1]
        what = "unique index" if index.unique else "index"
        return f"missing {what} {index.name} on {index.table.name}({_cols(index)})", None
    if kind == "add_constraint":
        return f"missing constraint {diff[1].name} on {diff[1].table.name}", None
    if kind == "add_fk":
        fk = diff[1]
        return f"missing foreign key on {fk.parent.name}({_cols(fk)})", None
    if kind in ("remove_index", "remove_constraint") and getattr(diff[1], "unique", True):
        obj = diff[1]
        return (
            f"unexpected unique index {obj.name} on {obj.table.name}({_cols(obj)}): "
            "it would refuse writes the code expects to succeed",
            None,
        )
    if kind == "remove_index":
        index = diff[1]
        return None, f"extra index {index.name} on {index.table.name}({_cols(index)})"
    if kind == "remove_column":
        column = diff[3]
        if not column.nullable and column.server_default is None:
            return f"unexpected NOT NULL column {diff[2]}.{column.name} without a default", None
        return None, f"extra column {diff[2]}.{column.name} (not in the models)"
    if kind == "modify_nullable":
        wanted = "NULL" if diff[5] else "NOT NULL"
        return f"column {diff[2]}.{diff[3]} should be {wanted}", None
    if kind == "modify_type":
        return f"column {diff[2]}.{diff[3]} is {diff[5]}, the models say {diff[6]}", None
    return None, f"{kind}: {diff[1:]!r}"


def _cols(obj: Any) -> str:
    return ", ".join(c.name for c in obj.columns)


def _unique_column_sets(conn: Connection, table: str) -> set[tuple[str, ...]]:
    rows = conn.execute(
        sa.text(
            """
            SELECT array_agg(a.attname ORDER BY k.ord)
            FROM pg_index x
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE t.relname = :table AND n.nspname = current_schema()
              AND x.indisunique AND NOT x.indisprimary AND x.indpred IS NULL
            GROUP BY x.indexrelid
            """
        ),
        {"table": table},
    )
    return {tuple(r[0]) for r in rows}


def _multi_account_problems(conn: Connection) -> list[str]:
    problems: list[str] = []
    inspector = sa.inspect(conn)
    for table, columns in SCOPED_UNIQUES:
        if inspector.has_table(table) and columns not in _unique_column_sets(conn, table):
            problems.append(
                f"multi-account is on but {table} lacks the account-scoped unique "
                f"({', '.join(columns)})"
            )
    for table, columns in GLOBAL_UNIQUES:
        if inspector.has_table(table) and columns in _unique_column_sets(conn, table):
            problems.append(
                f"multi-account is on but {table} keeps the global unique ({', '.join(columns)}): "
                "a second account's rows would collide"
            )
    for table, column in ACCOUNT_COLUMNS:
        if not inspector.has_table(table):
            continue
        found = {c["name"]: c for c in inspector.get_columns(table)}.get(column)
        if found is None or found["nullable"]:
            problems.append(f"multi-account is on but {table}.{column} is missing or nullable")
    return problems
