"""ClickHouse access through clickhouse-connect: embedded chdb by default, a server by URL.

`CLICKHOUSE_DSN` forms:
- `chdb://PATH` or `chdb:///ABS/PATH` (embedded engine). A relative PATH is resolved against
  the working directory, like `TORGHUT_DATA_DIR` (the default `chdb://.data/chdb` lands inside
  the default data folder). `?database=NAME` picks the database (default `torghut`).
- `http(s)://user:pass@host:8123/DB` (a server; DB defaults to `torghut`).

chdb is one engine per process and one process per path: the engine path is locked by the first
process that opens it, and a process can hold only one path at a time. A worker with the
ClickHouse source or the freshness check enabled holds its path while it runs, so CLI commands
(`clickhouse init-schema`, `replay`) on the same path must run while no worker holds it (or
point at a server). Several workers need a server.

clickhouse-connect's client is synchronous: every call runs on one dedicated thread (calls are
serialised, the event loop never blocks). The package is imported lazily: a worker that uses
neither the source nor the freshness check never loads chdb.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from streams.observability.scrub import scrub_text

DEFAULT_DATABASE = "torghut"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseError(RuntimeError):
    """A ClickHouse call failed; the message is scrubbed of credentials."""


@dataclass(frozen=True)
class Target:
    """Where ClickHouse is. `dsn` may hold a password: never log it, use `describe()`."""

    kind: str  # "chdb" | "http"
    database: str
    path: Path | None = None
    dsn: str | None = field(default=None, repr=False)

    def describe(self) -> str:
        if self.kind == "chdb":
            return f"chdb:{self.path} db={self.database}"
        parts = urlsplit(self.dsn or "")
        return f"{parts.scheme}://{parts.hostname}:{parts.port} db={self.database}"


def _database(name: str | None) -> str:
    db = name or DEFAULT_DATABASE
    if not _IDENTIFIER.match(db):
        raise ValueError("ClickHouse database name must be a plain identifier")
    return db


def parse_dsn(dsn: str, cwd: Path | None = None) -> Target:
    """Parse `CLICKHOUSE_DSN`; relative chdb paths resolve against `cwd` (default: the cwd)."""
    if dsn.startswith("chdb:"):
        location, _, query = dsn.removeprefix("chdb:").removeprefix("//").partition("?")
        if not location or location in ("memory", ":memory:"):
            raise ValueError("CLICKHOUSE_DSN: chdb needs an on-disk path (chdb://PATH)")
        path = Path(location)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        database = parse_qs(query).get("database", [None])[0]
        return Target("chdb", _database(database), path=path.resolve())
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https"):
        raise ValueError("CLICKHOUSE_DSN must start with chdb://, http:// or https://")
    database = parts.path.strip("/").split("/")[0] or None
    return Target("http", _database(database), dsn=dsn)


def _connect(target: Target) -> Any:
    import clickhouse_connect  # lazy: chdb is large and only some deployments need it

    if target.kind == "chdb":
        assert target.path is not None
        target.path.mkdir(parents=True, exist_ok=True)
        return clickhouse_connect.get_client(dsn=f"chdb://{target.path}")
    return clickhouse_connect.get_client(dsn=target.dsn, database="default")


class ClickHouse:
    """An async facade over one clickhouse-connect client, run on its own thread."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.database = target.database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clickhouse")
        self._client: Any = None

    def table(self, name: str) -> str:
        """Fully qualified, quoted table name in this target's database."""
        return f"`{self.database}`.`{name}`"

    def _client_or_connect(self) -> Any:
        if self._client is None:
            self._client = _connect(self.target)
        return self._client

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        def call() -> Any:
            return fn(self._client_or_connect(), *args, **kwargs)

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, call)
        except ClickHouseError:
            raise
        except Exception as exc:  # noqa: BLE001 - driver errors vary; all become one kind
            raise ClickHouseError(scrub_text(f"{type(exc).__name__}: {exc}")[:500]) from None

    async def connect(self) -> None:
        await self._run(lambda client: None)

    async def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        await self._run(lambda c: c.command(sql, parameters=dict(parameters or {})))

    async def query(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Rows as dicts; parameters are bound server-side (`{name:Type}` placeholders)."""

        def run(client: Any) -> list[dict[str, Any]]:
            result = client.query(sql, parameters=dict(parameters or {}))
            return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]

        rows: list[dict[str, Any]] = await self._run(run)
        return rows

    async def insert(
        self, table: str, rows: Sequence[Sequence[Any]], column_names: Sequence[str]
    ) -> None:
        data = [list(r) for r in rows]
        names = list(column_names)
        await self._run(lambda c: c.insert(table, data, column_names=names, database=self.database))

    def close_sync(self) -> None:
        """Release the client (and with it the chdb path lock); callable from any thread."""
        self._executor.submit(self._close_client).result()

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close_client)

    def _close_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def open_clickhouse(dsn: str, cwd: Path | None = None) -> ClickHouse:
    """A facade on `dsn`; connects on first use (in its thread)."""
    return ClickHouse(parse_dsn(dsn, cwd))
