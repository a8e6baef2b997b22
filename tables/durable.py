"""Tables whose writes can be awaited until Kafka acknowledged them (the lane's "record first").

faust sends a table write to its changelog in the background (`send_soon`) and forgets the
future. The lane must know that `submitting` is stored before it POSTs an order, so these tables
keep the futures and `changelog_acks.wait()` awaits every write made so far *by the waiting
task's scope*: the lanes agent runs accounts concurrently, one task per decision, and each task
opens its own scope (`changelog_acks.open_scope()`), so a decision waits for its own writes (the
order index and ledger entries it made) and never returns early because another task's `wait`
took its futures away. Writes made outside any scope share one list.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any

import faust

_scope: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar("changelog_scope", default=None)


class ChangelogAcks:
    def __init__(self) -> None:
        self._shared: list[asyncio.Future[Any]] = []

    def open_scope(self) -> None:
        """From now on, writes of the current task (and tasks it starts) are tracked apart."""
        _scope.set([])

    def _current(self) -> list[asyncio.Future[Any]]:
        scoped = _scope.get()
        return self._shared if scoped is None else scoped

    def add(self, future: asyncio.Future[Any]) -> None:
        self._current().append(future)

    async def wait(self) -> None:
        """Return once every changelog write made so far in this scope is acknowledged (raises
        if one failed)."""
        current = self._current()
        pending = list(current)
        current.clear()
        if pending:
            await asyncio.gather(*pending)


changelog_acks = ChangelogAcks()


class _AckedWrites:
    """`faust.Table.on_key_set`, keeping the changelog future."""

    def on_key_set(self, key: Any, value: Any) -> None:
        table: Any = self
        fut = table.send_changelog(table.partition_for_key(key), key, value)
        changelog_acks.add(fut)
        partition = fut.message.partition
        assert partition is not None
        table._maybe_set_key_ttl(key, partition)
        table._sensor_on_set(table, key, value)


class AckedTable(_AckedWrites, faust.Table):  # type: ignore[misc,type-arg]
    pass


class AckedGlobalTable(_AckedWrites, faust.GlobalTable):  # type: ignore[misc,type-arg]
    pass
