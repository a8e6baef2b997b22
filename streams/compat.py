"""Every use of a private internal of faust, mode, aiokafka and alpaca-py, in one place.

The app leans on a few internals that these libraries do not offer as API (each is named below
with why). They are correct for the pinned versions only, so importing this module checks that
the installed versions are exactly the pinned ones and refuses to run otherwise, naming the
package. `tests/unit/compat/` pins the *behaviour* each internal is used for: an upgrade that
changes one fails there, not in production.

To upgrade one of these libraries: bump the pin in `pyproject.toml` and `PINNED` below together,
run `tests/unit/compat/`, and re-read the functions here against the new source.
"""

from __future__ import annotations

import contextvars
import weakref
from collections.abc import Awaitable, Callable, Iterator
from importlib import metadata
from typing import Any, cast

# distribution name → the version `pyproject.toml` pins (a test keeps the two equal).
PINNED: dict[str, str] = {
    "faust-streaming": "0.15.3",
    "mode-streaming": "0.7.1",
    "aiokafka": "0.14.0",
    "alpaca-py": "0.44.0",
}


class IncompatibleLibrary(RuntimeError):
    """An installed library is not the version whose internals `streams.compat` was written for."""


def check_versions(installed: Callable[[str], str] = metadata.version) -> None:
    """Raise `IncompatibleLibrary` naming each package whose installed version is not pinned."""
    wrong = []
    for package, pinned in PINNED.items():
        try:
            found = installed(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != pinned:
            wrong.append(f"{package} {found} (pinned {pinned})")
    if wrong:
        raise IncompatibleLibrary(
            "streams.compat uses private internals checked only for the pinned versions; "
            f"installed: {', '.join(wrong)}. Install the pinned versions (make install) or "
            "re-check streams/compat.py against the new ones and update the pins."
        )


check_versions()

# Imported after the check: an incompatible library may fail to import these at all.
from aiokafka import AIOKafkaConsumer  # noqa: E402
from alpaca.trading.stream import TradingStream  # noqa: E402
from faust.cli.agents import agents as faust_agents_command  # noqa: E402
from faust.stores.rocksdb import Store as RocksStore  # noqa: E402
from faust.streams import _current_event  # noqa: E402
from faust.tables import TableManager  # noqa: E402
from faust.tables.recovery import Recovery  # noqa: E402
from faust.types import TP, AgentT, AppT, CollectionT, EventT  # noqa: E402

# ---------------------------------------------------------------- faust: events and tables


def run_as_event(event: EventT[Any]) -> None:
    """Make `event` the current stream event of this task (and tasks it starts).

    A table write is sent to the changelog partition of the *current event* (faust reads a
    context variable). The lanes agent takes each decision in its own task, so each task sets its
    decision's event: its ledger writes go to that decision's partition."""
    _current_event.set(weakref.ref(event))


def current_event() -> EventT[Any] | None:
    ref = _current_event.get(None)
    return ref() if ref is not None else None


def copy_context_with_event(event: EventT[Any]) -> contextvars.Context:
    """A context whose current event is `event` (for callbacks run outside the event's task)."""
    context = contextvars.copy_context()
    context.run(run_as_event, event)
    return context


def send_changelog_acked(table: CollectionT, key: Any, value: Any) -> Any:
    """`faust.Table.on_key_set`, returning the changelog send's future instead of dropping it.

    faust sends a table write in the background and forgets the future; the lanes must await
    `submitting` stored before they POST. Mirrors faust 0.15.3's `Table.on_key_set` exactly."""
    t = cast(Any, table)
    fut = t.send_changelog(t.partition_for_key(key), key, value)
    partition = fut.message.partition
    assert partition is not None
    t._maybe_set_key_ttl(key, partition)
    t._sensor_on_set(t, key, value)
    return fut


def raw_store_items(table: CollectionT) -> Iterator[tuple[bytes, bytes]] | None:
    """The active partitions' raw entries of a RocksDB-backed table (None for other stores).

    Through faust's mapping view every entry is decoded and wrapped: a 1M-entry ledger scan held
    the event loop 12-15 s after each rebalance (bench B5)."""
    store = cast(Any, table).data
    if isinstance(store, RocksStore):
        items: Iterator[tuple[bytes, bytes]] = store._iteritems()
        return items
    return None


def rocksdb_offset_key() -> bytes:
    """The key under which faust's RocksDB store keeps a partition's last applied offset."""
    key: bytes = RocksStore.offset_key
    return key


def encode_persisted_offset(offset: int) -> bytes:
    """faust stores the offset as its decimal text (`set_persisted_offset`)."""
    return str(offset).encode()


def rocksdb_for_partition(table: CollectionT, partition: int) -> Any:
    """The rocksdict database faust opened for one partition of a table."""
    return cast(Any, table).data._db_for_partition(partition)


def has_changelog_callback(table: CollectionT) -> bool:
    return cast(Any, table)._on_changelog_event is not None


# ---------------------------------------------------------------- faust: recovery


class SeekHookRecovery(Recovery):
    """faust's `Recovery` with a hook before it seeks the active changelog partitions.

    faust 0.15.3 calls `_seek_offsets(consumer, tps, offsets, title)` with `title` "active" or
    "standby" and `offsets[tp]` the last offset already in the store (-1: none); it then reads
    from `offsets[tp] + 1`. `before_active_seek` may raise an entry of `offsets` to skip records
    it restored itself."""

    async def before_active_seek(self, tps: set[TP], offsets: Any) -> None:
        """Override: runs before faust seeks the active partitions."""

    async def _seek_offsets(  # type: ignore[override]
        self, consumer: Any, tps: set[TP], offsets: Any, title: str
    ) -> None:
        if title == "active":
            await self.before_active_seek(tps, offsets)
        await super()._seek_offsets(consumer, tps, offsets, title)


def table_manager_with(recovery: Callable[[TableManager], Recovery]) -> type[TableManager]:
    """A `TableManager` class (the app setting) whose recovery service `recovery` builds."""

    class HookedTableManager(TableManager):
        @property
        def recovery(self) -> Recovery:
            if self._recovery is None:
                self._recovery = recovery(self)
            built: Recovery = self._recovery
            return built

    return HookedTableManager


def table_recovery(app: AppT) -> Any:
    """faust's table `Recovery` service (not on the `TableManagerT` interface)."""
    return cast(Any, app.tables).recovery


# ---------------------------------------------------------------- faust: agents and assignment


def agent_actors(agent: AgentT[Any]) -> list[Any]:
    """The agent's running actors (faust keeps them in a private list)."""
    return list(getattr(agent, "_actors", ()))


def actor_alive(actor: Any) -> bool:
    task = getattr(actor, "actor_task", None)
    return task is not None and not task.done() and not getattr(actor, "crashed", False)


def assigned_actives(app: AppT) -> set[TP]:
    """The active (not standby) partitions faust's assignor gave this worker; empty before."""
    try:
        return set(cast(Any, app).assignor.assigned_actives())
    except Exception:  # noqa: BLE001 - not assigned yet
        return set()


class AgentsCommand(faust_agents_command):
    """faust's `agents` command, also for an agent that reads several topics (faust 0.15.3's
    `_maybe_topic` raises ValueError for those; they list every topic)."""

    def _maybe_topic(self, agent: AgentT[Any]) -> str | None:
        try:
            topic: str | None = super()._maybe_topic(agent)
            return topic
        except ValueError:
            return ",".join(sorted(agent.get_topic_names()))


# ---------------------------------------------------------------- aiokafka


async def refresh_metadata(consumer: AIOKafkaConsumer) -> None:
    """Refresh the client's cluster metadata now (aiokafka 0.14 has no public call for it)."""
    await cast(Any, consumer)._client.force_metadata_update()


# ---------------------------------------------------------------- alpaca-py


def configure_rest_client(client: Any, session: Any) -> None:
    """Give an alpaca-py REST client our HTTP session (timeouts) and no retries of its own.

    alpaca-py 0.44 exposes neither a timeout nor "no retries" (`retry_attempts=0` is ignored);
    its `RESTClient._request` reads these attributes."""
    client._session = session
    client._retry = 0
    client._retry_codes = []


def close_rest_client(client: Any) -> None:
    """Close the HTTP session the client holds (alpaca-py has no `close`)."""
    client._session.close()


def rest_base_url(client: Any) -> str:
    return str(client._base_url)


class ObservedTradingStream(TradingStream):  # type: ignore[misc]
    """alpaca-py's `TradingStream` that reports each successful (re)connection, and runs in the
    caller's event loop (`run()` would start its own)."""

    def __init__(self, *args: Any, on_connected: Callable[[], Awaitable[None]], **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._on_connected = on_connected

    async def _start_ws(self) -> None:
        await super()._start_ws()  # type: ignore[no-untyped-call]
        await self._on_connected()

    async def run_in_loop(self) -> None:
        await self._run_forever()  # type: ignore[no-untyped-call]
