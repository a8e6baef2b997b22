"""The worker's one repository (one asyncpg pool), shared by lanes, order feed and timers."""

from __future__ import annotations

import asyncio
from functools import cache

from streams.persistence.dsn import asyncpg_dsn, database_dsn
from streams.persistence.repository import Repository
from streams.settings import get_settings


class RepositoryProvider:
    """A repository connected on first use and closed once, whoever asks first or last."""

    def __init__(self, dsn: str, pool_size: int) -> None:
        self._dsn = asyncpg_dsn(dsn)
        self._pool_size = pool_size
        self._repo: Repository | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> Repository:
        if self._repo is None:
            async with self._lock:
                if self._repo is None:
                    self._repo = await Repository.connect(self._dsn, self._pool_size)
        return self._repo

    async def close(self) -> None:
        repo, self._repo = self._repo, None
        if repo is not None:
            await repo.close()


@cache
def worker_repositories() -> RepositoryProvider:
    settings = get_settings()
    return RepositoryProvider(database_dsn(settings), settings.database_pool_size)
