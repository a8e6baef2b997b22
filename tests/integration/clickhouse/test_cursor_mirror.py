"""The cursor mirror in Postgres `trade_cursor`: per-account rows, and the resume point after the
cursor table is lost (the account furthest behind decides, so no account skips rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from streams.clickhouse.client import ClickHouse
from streams.clickhouse.source import (
    CURSOR_SOURCE,
    MappingCursorStore,
    PollSource,
    RepositoryCursorMirror,
)
from streams.domain.ch_cursor import RowKey
from streams.persistence import migrate
from streams.persistence.repository import Repository
from tests.integration.clickhouse.helpers import ListPublisher, insert, key_of, ta

pytestmark = pytest.mark.integration


@pytest.fixture
async def repo(pg_dsn: str) -> AsyncIterator[Repository]:
    await migrate.upgrade(pg_dsn, "head", default_account_label="paper-a")
    repository = await Repository.connect(pg_dsn, pool_size=2)
    yield repository
    await repository.close()


async def test_lost_table_resumes_from_the_account_furthest_behind(
    ch: ClickHouse, repo: Repository
) -> None:
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
    rows = [ta("AAPL", base + timedelta(milliseconds=i), i) for i in range(6)]
    await insert(ch, rows)
    ahead, behind = key_of(rows[4]), key_of(rows[1])
    await repo.upsert_cursor(CURSOR_SOURCE, "paper-a", *ahead)
    await repo.upsert_cursor(CURSOR_SOURCE, "paper-b", *behind)

    clock = [0.0]
    mirror = RepositoryCursorMirror(
        repo, lambda: ("paper-a", "paper-b", "paper-new"), monotonic=lambda: clock[0]
    )
    out = ListPublisher()
    table: dict[str, Any] = {}
    src = PollSource(
        ch,
        MappingCursorStore(table),
        out,
        lookback=timedelta(seconds=30),
        batch_size=100,
        mirror=mirror,
    )
    await src.poll_once()
    assert out.take() == [key_of(r) for r in rows[2:]]  # after paper-b's cursor, not paper-a's
    last = RowKey(*key_of(rows[-1]))
    for account in ("paper-a", "paper-b", "paper-new"):
        row = await repo.get_cursor(CURSOR_SOURCE, account)
        assert row is not None and RowKey(row.cursor_ts, row.cursor_symbol, row.cursor_seq) == last

    # Throttled: a newer cursor within the interval waits for the next tick after it.
    await insert(ch, [ta("AAPL", base + timedelta(seconds=1), 99)])
    await src.poll_once()
    stale = await repo.get_cursor(CURSOR_SOURCE, "paper-a")
    assert stale is not None and stale.cursor_seq == 5
    clock[0] = 6.0
    await src.poll_once()  # nothing new to read, the mirror catches up
    fresh = await repo.get_cursor(CURSOR_SOURCE, "paper-a")
    assert fresh is not None and fresh.cursor_seq == 99
