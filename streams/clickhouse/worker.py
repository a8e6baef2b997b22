"""The worker's ClickHouse collaborators, created on first use (chdb loads only when needed)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import timedelta
from typing import Any

from streams.clickhouse.client import ClickHouse, open_clickhouse
from streams.clickhouse.publish import TopicPublisher
from streams.clickhouse.source import (
    CursorMirror,
    InvalidRowSink,
    MappingCursorStore,
    PollSource,
    RepositoryCursorMirror,
)
from streams.settings import Settings

_clickhouse: ClickHouse | None = None


def shared_clickhouse(settings: Settings) -> ClickHouse:
    """One ClickHouse facade per process (chdb allows one engine path per process)."""
    global _clickhouse
    if _clickhouse is None:
        _clickhouse = open_clickhouse(settings.clickhouse_dsn.get_secret_value())
    return _clickhouse


async def close_shared_clickhouse() -> None:
    global _clickhouse
    if _clickhouse is not None:
        await _clickhouse.close()
        _clickhouse = None


class LazyRepositoryMirror:
    """`RepositoryCursorMirror` over the worker's repository, connected on first use."""

    def __init__(
        self,
        repository: Callable[[], Awaitable[Any]],
        accounts: Callable[[], Sequence[str]],
    ) -> None:
        self._repository = repository
        self._accounts = accounts
        self._mirror: RepositoryCursorMirror | None = None

    async def _get(self) -> RepositoryCursorMirror:
        if self._mirror is None:
            self._mirror = RepositoryCursorMirror(await self._repository(), self._accounts)
        return self._mirror

    async def resume_point(self) -> Any:
        return await (await self._get()).resume_point()

    async def mirror(self, key: Any) -> None:
        await (await self._get()).mirror(key)


def build_source(
    settings: Settings,
    table: MutableMapping[str, Any],
    topic: Any,
    *,
    flush: Callable[[], Awaitable[None]] | None = None,
    mirror: CursorMirror | None = None,
    on_invalid: InvalidRowSink | None = None,
) -> PollSource:
    return PollSource(
        shared_clickhouse(settings),
        MappingCursorStore(table, flush=flush),
        TopicPublisher(topic),
        lookback=timedelta(seconds=settings.clickhouse_lookback_seconds),
        batch_size=settings.clickhouse_batch_size,
        mirror=mirror,
        on_invalid=on_invalid,
    )
