"""Databases for the persistence tests: a head-schema template migrated once per session, cloned
per test with `CREATE DATABASE ... TEMPLATE` (milliseconds, instead of running migrations)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from streams.persistence import migrate
from streams.persistence.repository import Repository
from tests.support.stack import StackInfo, unique


async def _create(stack: StackInfo, name: str, template: str | None = None) -> str:
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await admin.close()
    return stack.database(name)


async def _drop(stack: StackInfo, name: str) -> None:
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def head_template(stack: StackInfo) -> Iterator[str]:
    name = unique("tmpl").replace("-", "_")

    async def build() -> None:
        dsn = await _create(stack, name)
        await migrate.upgrade(dsn, "head", default_account_label="paper")

    asyncio.run(build())
    yield name
    asyncio.run(_drop(stack, name))


@pytest.fixture
async def head_dsn(stack: StackInfo, head_template: str) -> AsyncIterator[str]:
    """A fresh database at the head revision."""
    name = unique("t").replace("-", "_")
    dsn = await _create(stack, name, template=head_template)
    yield dsn
    await _drop(stack, name)


@pytest.fixture
async def repo(head_dsn: str) -> AsyncIterator[Repository]:
    repository = await Repository.connect(head_dsn, pool_size=4)
    yield repository
    await repository.close()
