"""Tables whose writes can be awaited until Kafka acknowledged them (the lane's "record first").

faust sends a table write to its changelog in the background (`send_soon`) and forgets the
future. The lane must know that `submitting` is stored before it POSTs an order, so these tables
keep the futures and `changelog_acks.wait()` awaits every write made so far.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust


class ChangelogAcks:
    def __init__(self) -> None:
        self._pending: list[asyncio.Future[Any]] = []

    def add(self, future: asyncio.Future[Any]) -> None:
        self._pending.append(future)

    async def wait(self) -> None:
        """Return once every changelog write made so far is acknowledged (raises if one failed)."""
        pending, self._pending = self._pending, []
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
