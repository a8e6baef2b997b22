"""Pins for every private internal `streams.compat` uses: an upgrade that changes one fails here.

Each test checks the *behaviour* the app relies on, against the installed library, not only that
a name exists.
"""

from __future__ import annotations

import inspect
import re
import textwrap
import tomllib
import types
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import rocksdict
from aiokafka import AIOKafkaConsumer
from alpaca.common.rest import RESTClient
from alpaca.trading.client import TradingClient
from alpaca.trading.stream import TradingStream
from faust.agents.actor import Actor
from faust.cli.agents import agents as faust_agents_command
from faust.stores.rocksdb import Store as RocksStore
from faust.tables.recovery import Recovery
from faust.tables.table import Table
from faust.transport.consumer import Consumer
from faust.types import TP

from streams import compat

ROOT = Path(__file__).resolve().parents[3]
TP0 = TP("t", 0)


# ---------------------------------------------------------------- versions


def test_pins_are_the_ones_in_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(dep.split("==", 1) for dep in deps if "==" in dep)
    assert {name: pins[name] for name in compat.PINNED} == compat.PINNED


def test_installed_versions_are_the_pinned_ones() -> None:
    compat.check_versions()  # what importing streams.compat does


def test_another_version_is_refused_naming_the_package() -> None:
    def installed(package: str) -> str:
        return "0.99.0" if package == "aiokafka" else compat.PINNED[package]

    with pytest.raises(compat.IncompatibleLibrary, match=r"aiokafka 0\.99\.0 \(pinned 0\.14\.0\)"):
        compat.check_versions(installed)


# ---------------------------------------------------------------- faust: commit arithmetic


def _offsets_state(committed: int | None, acked: list[int]) -> Any:
    from intervaltree import IntervalTree

    state = types.SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
    )
    state._committed_offset[TP0] = committed
    state._acked[TP0] = list(acked)
    state._acked_index[TP0] = set(acked)
    return state


def test_faust_commits_only_the_contiguous_acked_prefix() -> None:
    """The lanes ack a `noack` stream in read order (`KeyedDispatcher`): what becomes committable
    is the offset after the last of the contiguous acked run — never past an unacked one."""
    assert Consumer._new_offset(_offsets_state(None, [0, 1, 2, 3]), TP0) == 4
    # 3 not acked yet (its decision unfinished): nothing past it is committable.
    assert Consumer._new_offset(_offsets_state(None, [0, 1, 2, 4, 5]), TP0) == 3
    # A gap right after the committed offset: nothing new is committable.
    assert Consumer._new_offset(_offsets_state(10, [12, 13]), TP0) is None
    assert Consumer._new_offset(_offsets_state(10, [11, 12]), TP0) == 13


# ---------------------------------------------------------------- faust: events and tables


def test_faust_on_key_set_is_what_send_changelog_acked_mirrors() -> None:
    source = textwrap.dedent(inspect.getsource(Table.on_key_set))
    calls = re.findall(r"self\.(\w+)\(", source)
    assert calls == ["send_changelog", "partition_for_key", "_maybe_set_key_ttl", "_sensor_on_set"]
    assert "fut.message.partition" in source


def test_table_writes_go_to_the_current_events_partition() -> None:
    calls: list[str] = []

    class FakeTable:
        use_partitioner = False

        def _verify_source_topic_partitions(self, topic: str) -> None:
            calls.append(topic)

    class FakeEvent:  # faust keeps a weak reference to the event
        message = types.SimpleNamespace(topic="decisions", partition=3)

    event: Any = FakeEvent()
    compat.run_as_event(event)
    assert compat.current_event() is event
    assert Table.partition_for_key(FakeTable(), b"acct") == 3  # type: ignore[arg-type]
    assert calls == ["decisions"]


def test_acked_write_keeps_the_changelog_future() -> None:
    seen: list[Any] = []

    class FakeTable:
        def partition_for_key(self, key: bytes) -> int:
            return 2

        def send_changelog(self, partition: int, key: bytes, value: bytes) -> Any:
            return types.SimpleNamespace(message=types.SimpleNamespace(partition=partition))

        def _maybe_set_key_ttl(self, key: bytes, partition: int) -> None:
            seen.append(("ttl", partition))

        def _sensor_on_set(self, table: Any, key: bytes, value: bytes) -> None:
            seen.append(("sensor", key))

    fut = compat.send_changelog_acked(FakeTable(), b"k", b"v")  # type: ignore[arg-type]
    assert fut.message.partition == 2
    assert seen == [("ttl", 2), ("sensor", b"k")]


def test_rocksdb_store_iteration_yields_raw_entries_without_the_offset_key(
    tmp_path: Path,
) -> None:
    db = rocksdict.Rdict(str(tmp_path / "p0"), options=rocksdict.Options(raw_mode=True))
    try:
        db[b"alpha|h1"] = b"{}"
        db[b"beta|h2"] = b"[]"
        db[compat.rocksdb_offset_key()] = compat.encode_persisted_offset(41)
        store = RocksStore.__new__(RocksStore)
        store.use_rocksdict = True
        store._dbs_for_actives = lambda: iter([db])  # type: ignore[method-assign]
        table: Any = types.SimpleNamespace(data=store)
        items = sorted(compat.raw_store_items(table) or [])
        assert items == [(b"alpha|h1", b"{}"), (b"beta|h2", b"[]")]
        # faust reads the offset back as the decimal text the bulk restore writes.
        store._db_for_partition = lambda partition: db  # type: ignore[method-assign]
        assert store.persisted_offset(TP0) == 41
    finally:
        db.close()


def test_raw_store_items_is_none_for_other_stores() -> None:
    table: Any = types.SimpleNamespace(data={})
    assert compat.raw_store_items(table) is None


# ---------------------------------------------------------------- faust: recovery


def test_recovery_seeks_active_partitions_through_the_hooked_method() -> None:
    signature = inspect.signature(Recovery._seek_offsets)
    assert list(signature.parameters) == ["self", "consumer", "tps", "offsets", "title"]
    source = inspect.getsource(Recovery)
    assert re.search(
        r"_seek_offsets\)\(\s*consumer, assigned_active_tps, active_offsets, "
        r'"active"',
        source,
    )
    assert re.search(
        r'_seek_offsets\)\(\s*consumer, standby_tps, standby_offsets, "standby"', source
    )


async def test_seek_hook_runs_before_faust_only_for_active_partitions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order: list[str] = []

    async def faust_seek(self: Any, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        order.append(f"faust:{title}")

    monkeypatch.setattr(Recovery, "_seek_offsets", faust_seek)

    class Hooked(compat.SeekHookRecovery):
        async def before_active_seek(self, tps: set[TP], offsets: Any) -> None:
            order.append("hook")
            offsets[TP0] = 99

    recovery = Hooked.__new__(Hooked)
    offsets: dict[TP, int] = {TP0: -1}
    await recovery._seek_offsets(None, {TP0}, offsets, "active")
    await recovery._seek_offsets(None, {TP0}, offsets, "standby")
    assert order == ["hook", "faust:active", "faust:standby"]
    assert offsets[TP0] == 99


def test_table_manager_builds_the_hooked_recovery() -> None:
    built: list[Any] = []
    manager_cls = compat.table_manager_with(lambda manager: built.append(manager) or "R")  # type: ignore[arg-type,return-value]
    manager = manager_cls.__new__(manager_cls)
    manager._recovery = None
    assert manager.recovery == "R"
    assert manager.recovery == "R" and built == [manager]  # built once


# ---------------------------------------------------------------- faust: agents, assignment, CLI


def test_agent_actor_liveness_attributes() -> None:
    assert "actor_task" in inspect.getsource(Actor.__init__)
    assert isinstance(inspect.getattr_static(Actor, "crashed"), property)
    done = types.SimpleNamespace(done=lambda: True)
    running = types.SimpleNamespace(done=lambda: False)
    assert compat.actor_alive(types.SimpleNamespace(actor_task=running, crashed=False))
    assert not compat.actor_alive(types.SimpleNamespace(actor_task=done, crashed=False))
    assert not compat.actor_alive(types.SimpleNamespace(actor_task=running, crashed=True))
    assert not compat.actor_alive(types.SimpleNamespace(actor_task=None))


def test_faust_agents_keep_their_actors_in_a_list() -> None:
    from faust.agents.agent import Agent

    assert "self._actors" in inspect.getsource(Agent.__init__)
    agent: Any = types.SimpleNamespace(_actors=["a", "b"])
    assert compat.agent_actors(agent) == ["a", "b"]


def test_assigned_actives_comes_from_the_assignor() -> None:
    from faust.assignor.partition_assignor import PartitionAssignor

    assert callable(PartitionAssignor.assigned_actives)
    app: Any = types.SimpleNamespace(assignor=types.SimpleNamespace(assigned_actives=lambda: {TP0}))
    assert compat.assigned_actives(app) == {TP0}
    assert compat.assigned_actives(types.SimpleNamespace()) == set()  # type: ignore[arg-type]


def test_faust_agents_command_has_the_overridden_hook() -> None:
    assert "_maybe_topic" in vars(faust_agents_command)
    assert "get_topic_name" in inspect.getsource(faust_agents_command._maybe_topic)


# ---------------------------------------------------------------- aiokafka


async def test_aiokafka_consumer_client_can_force_a_metadata_update() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        refresh = consumer._client.force_metadata_update
        assert not [
            p for p in inspect.signature(refresh).parameters.values() if p.default is p.empty
        ]
        assert "_md_update_waiter" in inspect.getsource(refresh)
    finally:
        await consumer.stop()


# ---------------------------------------------------------------- alpaca-py


def test_alpaca_rest_client_reads_the_attributes_we_set() -> None:
    source = inspect.getsource(RESTClient._request) + inspect.getsource(RESTClient._one_request)
    for attribute in ("self._session", "self._retry", "self._retry_codes"):
        assert attribute in source
    client = TradingClient(
        "key-id-123456", "secret-123456", raw_data=True, url_override="http://127.0.0.1:8123"
    )
    session = object()
    compat.configure_rest_client(client, session)
    assert client._session is session and client._retry == 0 and client._retry_codes == []
    assert compat.rest_base_url(client) == "http://127.0.0.1:8123"


async def test_aiohttp_resends_only_when_its_retry_switch_is_on() -> None:
    import aiohttp

    source = inspect.getsource(aiohttp.ClientSession._request)
    assert "self._retry_connection and method in IDEMPOTENT_METHODS" in source
    session = compat.without_connection_retry(aiohttp.ClientSession())
    try:
        assert session._retry_connection is False
    finally:
        await session.close()


def test_alpaca_request_defaults_are_what_rest_client_request_uses() -> None:
    """`_request` builds `base_url + "/" + version + path` and sends `_get_default_headers()`."""
    source = inspect.getsource(RESTClient._request)
    assert 'base_url + "/" + version + path' in source
    assert "self._get_default_headers()" in source
    client = TradingClient(
        "key-id-123456", "secret-123456", raw_data=True, url_override="http://127.0.0.1:8123"
    )
    prefix, headers = compat.rest_request_defaults(client)
    assert prefix == "http://127.0.0.1:8123/v2"
    assert headers["APCA-API-KEY-ID"] == "key-id-123456"
    assert headers["APCA-API-SECRET-KEY"] == "secret-123456"
    assert headers["User-Agent"].startswith("APCA-PY/0.44.0 ")


def test_alpaca_trading_stream_hooks() -> None:
    assert inspect.iscoroutinefunction(TradingStream._start_ws)
    assert inspect.iscoroutinefunction(TradingStream._run_forever)
    assert "_start_ws" in inspect.getsource(TradingStream._run_forever)


# ---------------------------------------------------------------- faust: acks of a cancelled event


def test_faust_acks_the_event_being_handled_in_a_finally_unless_noack() -> None:
    """The hazard `each_event_acked_when_done` avoids: both stream iterators ack the current
    event in a `finally` (so also when the agent is cancelled mid-event), gated by
    `enable_acks`, which `noack()` turns off."""
    from faust.streams import Stream

    for iterator in (Stream._c_aiter, Stream._py_aiter):
        source = inspect.getsource(iterator)
        assert "do_ack = self.enable_acks" in source
        assert re.search(r"finally:.*?do_ack or value is skipped_value", source, re.S)
    assert "enable_acks=False" in inspect.getsource(Stream.noack)


class _Manual:
    def __init__(self, events: list[Any]) -> None:
        self._events = events
        self.acked: list[Any] = []

    def noack(self) -> _Manual:
        return self

    async def events(self) -> Any:
        for event in self._events:
            yield event

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True


async def test_an_event_is_acked_only_once_handled() -> None:
    import asyncio

    stream = _Manual(["e1", "e2", "e3"])
    blocked = asyncio.Event()

    async def handle(event: Any) -> None:
        if event == "e2":
            blocked.set()
            await asyncio.sleep(3600)  # e.g. decisions being published at shutdown

    task = asyncio.create_task(compat.each_event_acked_when_done(stream, handle))
    await blocked.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stream.acked == ["e1"]  # e2 is redelivered after the restart, never lost


# ---------------------------------------------------------------- faust: acks of a batch


def test_take_events_acks_its_batch_in_a_finally_and_a_message_acks_on_its_last_reference() -> None:
    """The hazard `held_until_handled` avoids and the rule it relies on: `take_events` acks
    every event of a yielded batch in a `finally` (also when the consumer raised or was
    cancelled), and a message is acked only when its last reference is released."""
    from faust.streams import Stream
    from faust.types.tuples import Message

    source = inspect.getsource(Stream.take_events)
    assert re.search(
        r"yield list\(events\)\s+finally:.*?for event in events:\s+await self\.ack\(event\)",
        source,
        re.S,
    )
    assert "if not self.decref(n):" in inspect.getsource(Message.ack)


def _message(offset: int) -> Any:
    from faust.types.tuples import Message

    message = Message("t", 0, offset, 0.0, 0, None, None, b"v", None)
    message.incref()  # faust's conductor: one reference per stream it delivers the message to
    return message


class _Event:
    def __init__(self, offset: int) -> None:
        self.message = _message(offset)


async def _take_events_like_faust(batches: list[list[_Event]]) -> Any:
    """faust's `take_events` protocol: yield a batch, ack every event of it in a `finally`."""
    for events in batches:
        try:
            yield events
        finally:
            for event in events:
                event.message.ack(consumer=None)


async def test_a_batch_is_acked_only_once_its_handling_completed() -> None:
    import asyncio

    first, second = [_Event(0), _Event(1)], [_Event(2)]
    started = asyncio.Event()
    taken = _take_events_like_faust([first, second])
    held = compat.held_until_handled(taken)

    async def consume() -> None:
        async for events in held:
            if events is second:
                started.set()
                await asyncio.sleep(3600)  # applying the batch when SIGTERM arrives

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # What the event loop does with abandoned async generators: close them.
    await held.aclose()
    await taken.aclose()
    assert [e.message.acked for e in first] == [True, True]
    assert second[0].message.acked is False  # redelivered after the restart, never lost
