"""chdb for the ClickHouse tests: one engine path per session (chdb allows one path per process),
a fresh database per test. A test that hands the path to a subprocess (worker, CLI) closes its
facade first (`await ch.close()`); the facade reconnects on its next call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from streams.clickhouse.client import ClickHouse, open_clickhouse
from streams.clickhouse.schema import init_schema
from tests.support.stack import unique


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb") / "engine"


@pytest.fixture
def ch_database() -> str:
    return unique("ta").replace("-", "_")


@pytest.fixture
def ch_dsn(chdb_path: Path, ch_database: str) -> str:
    return f"chdb://{chdb_path}?database={ch_database}"


@pytest.fixture
async def ch(ch_dsn: str, ch_database: str) -> AsyncIterator[ClickHouse]:
    facade = open_clickhouse(ch_dsn)
    await init_schema(facade, ttl_days=None)  # test rows may be older than any TTL
    yield facade
    await facade.command(f"DROP DATABASE IF EXISTS `{ch_database}`")
    await facade.close()
