"""Shared fixtures. Integration fixtures need the local stack that `make test` starts."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.stack import StackInfo, stack_info, unique
from tests.support.worker import Worker


@pytest.fixture(scope="session")
def stack() -> StackInfo:
    info = stack_info()
    if info is None:
        pytest.fail("the local stack is not up: run the tests with `make test`")
    return info


@pytest.fixture
async def pg_dsn(stack: StackInfo) -> AsyncIterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    name = unique("t").replace("-", "_")
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    yield stack.database(name)
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    """Collects workers started by a test and stops every one of them afterwards."""
    started: list[Worker] = []
    yield started
    for w in started:
        w.stop()
