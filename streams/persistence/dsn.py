"""DSN forms: asyncpg wants `postgresql://`, SQLAlchemy async wants `postgresql+asyncpg://`."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def asyncpg_dsn(dsn: str) -> str:
    """`postgresql://...` whatever driver suffix the DSN carried."""
    if not _SCHEME.match(dsn):
        raise ValueError("DATABASE_URL must start with postgresql:// (or postgres://)")
    return _SCHEME.sub("postgresql://", dsn, count=1)


def sqlalchemy_url(dsn: str) -> str:
    """`postgresql+asyncpg://...` for SQLAlchemy's async engine and Alembic."""
    return _SCHEME.sub("postgresql+asyncpg://", asyncpg_dsn(dsn), count=1)
