"""Tables whose writes can be awaited until Kafka acknowledged them (the lane's "record first").

faust sends a table write to its changelog in the background (`send_soon`) and forgets the
future. The lane must know that `submitting` is stored before it POSTs an order, so these tables
keep the futures in their `ChangelogAcks`, and `acks.wait()` awaits every write made so far *by
the waiting task's scope*: the lanes agent runs accounts concurrently, one task per decision, and
each task opens its own scope (`acks.open_scope()`), so a decision waits for its own writes (the
order index and ledger entries it made) and never returns early because another task's `wait`
took its futures away. Writes made outside any scope share one list.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, cast

import faust

from streams.compat import send_changelog_acked
from streams.settings import Settings

_scope: ContextVar[list[asyncio.Future[Any]] | None] = ContextVar("changelog_scope", default=None)


class ChangelogAcks:
    """The pending changelog writes of the acked tables of one app (one per process)."""

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


class _AckedWrites:
    """faust's `on_key_set`, keeping the changelog future in the table's `acks`."""

    acks: ChangelogAcks

    def on_key_set(self, key: Any, value: Any) -> None:
        self.acks.add(send_changelog_acked(cast(Any, self), key, value))


class AckedTable(_AckedWrites, faust.Table):  # type: ignore[misc,type-arg]
    pass


class AckedGlobalTable(_AckedWrites, faust.GlobalTable):  # type: ignore[misc,type-arg]
    pass


def add_acked_table(
    app: faust.App, acks: ChangelogAcks, *, is_global: bool = False, **options: Any
) -> Any:
    """Declare an acked (global) table on `app` whose writes land in `acks`."""
    cls = AckedGlobalTable if is_global else AckedTable
    if is_global:
        options["is_global"] = True
    table = cls(app, beacon=app.tables.beacon, **options)
    table.acks = acks
    return app.tables.add(cast(Any, table))


def add_account_table(
    app: faust.App, settings: Settings, acks: ChangelogAcks, name: str, help: str
) -> Any:
    """An acked table keyed by account-prefixed bytes, co-partitioned with the decisions."""
    return add_acked_table(
        app,
        acks,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        help=help,
    )
