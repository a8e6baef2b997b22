"""Readiness: table recovery finished, Kafka answers, Postgres answers.

Probes are cached for a few seconds so that a tight scrape or probe loop does not hammer the
dependencies, and each probe has a short timeout so that `/readyz` itself answers quickly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from streams.observability.scrub import scrub_text
from streams.persistence.dsn import asyncpg_dsn

PROBE_TIMEOUT_SECONDS = 1.0
PROBE_CACHE_SECONDS = 3.0

Probe = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str = "ok"

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Readiness:
    checks: dict[str, Check]

    @property
    def ready(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "checks": {name: check.as_dict() for name, check in self.checks.items()},
        }


class CachedProbe:
    """Runs an async probe at most every `ttl` seconds, each run bounded by `timeout`."""

    def __init__(
        self,
        probe: Probe,
        *,
        timeout: float = PROBE_TIMEOUT_SECONDS,
        ttl: float = PROBE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.probe = probe
        self._timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._last: Check | None = None
        self._at = 0.0
        self._lock = asyncio.Lock()

    async def check(self) -> Check:
        async with self._lock:
            if self._last is not None and self._clock() - self._at < self._ttl:
                return self._last
            self._last = await self._run()
            self._at = self._clock()
            return self._last

    async def _run(self) -> Check:
        try:
            await asyncio.wait_for(self.probe(), self._timeout)
        except TimeoutError:
            return Check(False, f"no answer within {self._timeout:g}s")
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", with its reason
            return Check(False, scrub_text(f"{type(exc).__name__}: {exc}")[:300])
        return Check(True)


class PostgresProbe:
    """`SELECT 1` on one kept connection, re-opened after any failure."""

    def __init__(self, dsn: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> None:
        self._dsn = asyncpg_dsn(dsn)
        self._timeout = timeout
        self._conn: Any = None

    async def __call__(self) -> None:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            await self._conn.fetchval("SELECT 1", timeout=self._timeout)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close(timeout=self._timeout)


def recovery_check(
    *, completed: bool, in_recovery: bool, rebalancing: bool, remaining: int
) -> Check:
    """Not ready until faust finished restoring tables from their changelogs, and during a
    rebalance (which may start another recovery)."""
    if not completed:
        return Check(False, f"table recovery in progress ({remaining} records remaining)")
    if in_recovery:
        return Check(False, f"table recovery after rebalance ({remaining} records remaining)")
    if rebalancing:
        return Check(False, "rebalancing")
    return Check(True)
