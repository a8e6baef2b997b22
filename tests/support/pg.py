"""Postgres helpers for tests and benchmarks: one-off queries on a fresh connection."""

from __future__ import annotations

from typing import Any

import asyncpg


async def fetch(dsn: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()
