"""Alembic environment (async, asyncpg). The DSN comes from, in order: the programmatic config
(`config.attributes["dsn"]`, see streams.persistence.migrate), `-x dsn=...`, `sqlalchemy.url`,
then DATABASE_URL from the settings. Migrations inspect the live catalog (they are guarded
against drift), so offline `--sql` mode is not supported.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection

from streams.persistence.dsn import async_engine, database_dsn
from streams.persistence.models import metadata
from streams.settings import load_settings

config = context.config

if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    dsn = (
        config.attributes.get("dsn")
        or context.get_x_argument(as_dictionary=True).get("dsn")
        or config.get_main_option("sqlalchemy.url")
        or database_dsn(load_settings())
    )
    return str(dsn)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Autogenerate looks at the tables the models define, nothing else in the database."""
    return type_ != "table" or name in metadata.tables


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        transaction_per_migration=True,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = async_engine(database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: they inspect the live catalog")
asyncio.run(run_async_migrations())
