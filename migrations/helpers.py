"""Guarded DDL for the migrations: each helper is a no-op when the database already has the result.

Production had drift (columns missing although Alembic said "head", indexes under other names), so
every migration step checks the live catalog instead of trusting the revision number.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.schema import SchemaItem

from streams.settings import load_settings


def default_account_label() -> str:
    """Label for rows that predate accounts: `-x default_account_label=` or the configured one."""
    cfg = context.config
    label = cfg.attributes.get("default_account_label") or context.get_x_argument(
        as_dictionary=True
    ).get("default_account_label")
    return str(label or load_settings().account_label)


def _inspector() -> sa.Inspector:
    return sa.inspect(op.get_bind())


def has_table(table: str) -> bool:
    return _inspector().has_table(table)


def has_column(table: str, column: str) -> bool:
    return any(c["name"] == column for c in _inspector().get_columns(table))


def create_table_guarded(table: str, *elements: SchemaItem) -> None:
    """Create `table`, or, when it exists, add whichever of its columns are missing."""
    if not has_table(table):
        op.create_table(table, *elements)
        return
    for element in elements:
        if isinstance(element, sa.Column) and not has_column(table, element.name):
            op.add_column(table, element)


def add_column_guarded(table: str, column: sa.Column[object]) -> bool:
    """Add `column` unless present; True when it was added."""
    if has_column(table, column.name):
        return False
    op.add_column(table, column)
    return True


def drop_column_guarded(table: str, column: str) -> None:
    if has_table(table) and has_column(table, column):
        op.drop_column(table, column)


def create_index_guarded(
    name: str,
    table: str,
    columns: Sequence[str],
    *,
    unique: bool = False,
    where: str | None = None,
) -> None:
    """`CREATE [UNIQUE] INDEX IF NOT EXISTS`, skipped when an equivalent index has another name."""
    if unique and unique_index_on(table, columns) is not None:
        return
    kind = "UNIQUE INDEX" if unique else "INDEX"
    cols = ", ".join(f'"{c}"' for c in columns)
    predicate = f" WHERE {where}" if where else ""
    op.execute(f'CREATE {kind} IF NOT EXISTS "{name}" ON "{table}" ({cols}){predicate}')


def drop_index_guarded(name: str) -> None:
    op.execute(f'DROP INDEX IF EXISTS "{name}"')


def unique_index_on(table: str, columns: Sequence[str]) -> str | None:
    """Name of a non-partial unique index (or constraint) on exactly `columns`, in that order."""
    rows = op.get_bind().execute(
        sa.text(
            """
            SELECT i.relname AS name,
                   array_agg(a.attname ORDER BY k.ord) AS cols
            FROM pg_index x
            JOIN pg_class t ON t.oid = x.indrelid
            JOIN pg_class i ON i.oid = x.indexrelid
            JOIN pg_namespace n ON n.oid = t.relnamespace
            CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
            JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
            WHERE t.relname = :table AND n.nspname = current_schema()
              AND x.indisunique AND NOT x.indisprimary AND x.indpred IS NULL
            GROUP BY i.relname
            """
        ),
        {"table": table},
    )
    for name, cols in rows:
        if list(cols) == list(columns):
            return str(name)
    return None


def drop_unique_on(table: str, columns: Sequence[str]) -> None:
    """Drop every unique index/constraint on exactly `columns`, whatever drift named it."""
    while (name := unique_index_on(table, columns)) is not None:
        constraint = op.get_bind().execute(
            sa.text(
                "SELECT 1 FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                "WHERE t.relname = :table AND c.conname = :name"
            ),
            {"table": table, "name": name},
        )
        if constraint.first() is not None:
            op.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
        else:
            op.execute(f'DROP INDEX "{name}"')


def count(sql: str, **params: object) -> int:
    return int(op.get_bind().execute(sa.text(sql), params).scalar_one())


def execute(sql: str, **params: object) -> None:
    op.get_bind().execute(sa.text(sql), params)
