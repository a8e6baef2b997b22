"""The one place that builds Postgres connections' DSN: asyncpg wants `postgresql://`,
SQLAlchemy async wants `postgresql+asyncpg://`.

`database_dsn(settings)` is `DATABASE_URL` with the password from `DATABASE_PASSWORD_FILE` and
TLS from `DATABASE_SSLMODE` / `DATABASE_SSL_ROOT_CERT_FILE` put in as libpq parameters
(`sslmode`, `sslrootcert`), which asyncpg reads itself. `async_engine(dsn)` connects SQLAlchemy
(db check, Alembic) through asyncpg with that same DSN, so both drivers use one TLS setup.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from streams.domain import secrets
from streams.settings import Settings

_SCHEME = re.compile(r"^(postgres|postgresql)(\+[a-z0-9_]+)?://", re.IGNORECASE)


def asyncpg_dsn(dsn: str) -> str:
    """`postgresql://...` whatever driver suffix the DSN carried."""
    if not _SCHEME.match(dsn):
        raise ValueError("DATABASE_URL must start with postgresql:// (or postgres://)")
    return _SCHEME.sub("postgresql://", dsn, count=1)


def sqlalchemy_url(dsn: str) -> str:
    """`postgresql+asyncpg://...` for SQLAlchemy's async engine and Alembic."""
    return _SCHEME.sub("postgresql+asyncpg://", asyncpg_dsn(dsn), count=1)


class DatabaseConfigError(ValueError):
    """Database settings that cannot work; names settings and files, never the password."""


def database_dsn(settings: Settings) -> str:
    """The DSN every Postgres client of the app uses (asyncpg form)."""
    parts = urlsplit(asyncpg_dsn(settings.database_url.get_secret_value()))
    netloc = parts.netloc
    if settings.database_password_file is not None:
        path = settings.database_password_file
        try:
            password = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise DatabaseConfigError(
                f"DATABASE_PASSWORD_FILE {path} is unreadable: {type(exc).__name__}"
            ) from None
        secrets.register(password)
        host = netloc.rpartition("@")[2]
        user = parts.username or "postgres"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    query = dict(parse_qsl(parts.query))
    if settings.database_sslmode is not None:
        query["sslmode"] = settings.database_sslmode.value
    if settings.database_ssl_root_cert_file is not None:
        if not settings.database_ssl_root_cert_file.is_file():
            raise DatabaseConfigError(
                f"DATABASE_SSL_ROOT_CERT_FILE {settings.database_ssl_root_cert_file} does not exist"
            )
        query["sslrootcert"] = str(settings.database_ssl_root_cert_file)
    dsn = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), parts.fragment))
    secrets.register(dsn)
    return dsn


def async_engine(dsn: str, **kwargs: Any) -> Any:
    """A SQLAlchemy async engine whose connections asyncpg opens from `dsn` itself (so libpq
    parameters such as `sslmode=verify-full&sslrootcert=...` work as they do for asyncpg)."""
    import asyncpg
    from sqlalchemy.ext.asyncio import create_async_engine

    plain = asyncpg_dsn(dsn)

    async def connect() -> Any:
        return await asyncpg.connect(plain)

    return create_async_engine("postgresql+asyncpg://", async_creator=connect, **kwargs)
