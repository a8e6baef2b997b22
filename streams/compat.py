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

import asyncio
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
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

log = logging.getLogger(__name__)

# Imported after the check: an incompatible library may fail to import these at all.
from aiokafka import AIOKafkaConsumer  # noqa: E402
from aiokafka.errors import IllegalStateError  # noqa: E402
from alpaca.trading.stream import TradingStream  # noqa: E402
from faust.cli.agents import agents as faust_agents_command  # noqa: E402
from faust.stores.rocksdb import Store as RocksStore  # noqa: E402
from faust.streams import _current_event  # noqa: E402
from faust.tables import TableManager  # noqa: E402
from faust.tables.recovery import Recovery  # noqa: E402
from faust.transport._cython.conductor import ConductorHandler  # noqa: E402
from faust.transport.consumer import (  # noqa: E402
    CONSUMER_FETCHING,
    CONSUMER_PARTITIONS_REVOKED,
)
from faust.transport.drivers import aiokafka as faust_aiokafka  # noqa: E402
from faust.types import TP, AgentT, AppT, CollectionT, EventT  # noqa: E402
from faust.types.tuples import ack_lock  # noqa: E402
from faust.utils.functional import consecutive_numbers  # noqa: E402
from faust.utils.tracing import traced_from_parent_span  # noqa: E402
from mode import Service  # noqa: E402
from mode.services import WaitResults  # noqa: E402

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


async def each_event_acked_when_done(
    stream: Any, handle: Callable[[EventT[Any]], Awaitable[None]]
) -> None:
    """Feed every event of a faust stream to `handle`, acking it only once `handle` returned.

    faust's stream iterator acks the event being processed in a `finally` — also when the
    agent is cancelled or raises while handling it (a SIGTERM mid-publish): the offset of a
    signal whose decisions were never produced could then be committed, and the signal lost.
    With `noack`, only an event whose handling finished is acked."""
    manual = stream.noack()
    async for event in manual.events():
        await handle(event)
        await manual.ack(event)


async def held_until_handled(
    batches: AsyncIterator[Sequence[EventT[Any]]],
) -> AsyncIterator[Sequence[EventT[Any]]]:
    """Batches of `take_events` whose events are acked only once the consumer's loop body for
    the batch finished.

    faust's `take_events` acks every event of a batch in a `finally` around its `yield` — also
    when the consumer raised or was cancelled while handling the batch (a SIGTERM mid-apply):
    those offsets could then be committed with the updates never applied. An extra reference
    on each event's message makes that `finally`-ack not the last one; the reference is
    dropped only when the consumer asks for the next batch (its body completed), so the
    `finally`-ack that follows is the one that marks the offset committable."""
    async for events in batches:
        for event in events:
            event.message.incref()
        yield events
        for event in events:
            event.message.decref()


async def event_batches(
    stream: Any, max_events: int, batch_acks: bool = True
) -> AsyncIterator[list[EventT[Any]]]:
    """The events of a faust agent's stream in batches, each acked only once the consumer's loop
    body for it completed (the signals stage's batch path, `TORGHUT_SIGNAL_BATCH_MAX`).

    A batch is whatever the agent's channel queue holds when the consumer asks, up to
    `max_events`; an empty queue is waited on for its first event only (no `within` timer: a
    lone signal is handed on at once). Per event it does exactly what faust 0.15.3's stream
    iterator (`Stream._c_aiter` / `_py_aiter`) does before and after the agent's body, minus the
    per-event costs the stage does not need:

    - a record the iterator would skip (flow control off: a rebalance under way, or an earlier
      generation) is skipped here too and released untracked, never made committable
      (`NoSkipConsumer.ack`); the seek after the rebalance reads it again;
    - a record of an acking topic is tracked (`unacked`, the consumer's `on_message_in`
      sensor) before it is handed on, so a rebalance waits for it (`wait_empty`);
    - after the body: the event is acked (`Event.ack`: its last reference makes the offset
      committable) and the `on_message_out` sensor called, as `Stream.ack` does (with
      `batch_acks`, `TORGHUT_LEAN_DRAIN`: `ack_events`, the batch's acks under one hold of
      faust's `ack_lock`).

    Left out: the per-event `asyncio.sleep(0)` and channel `__anext__` (one queue read and one
    loop pass per *batch*), the stream processors and `on_merge` (the agent's stream has none),
    and the per-stream-event sensors (`on_stream_event_in/out`: per-event timing and counters
    in faust's Monitor; nothing of this project reads them). The stream's current event is not
    set: a table write of the batch must set its event (`run_as_event`).

    The acks run after the `yield`, not in a `finally`: a batch whose handling raised or was
    cancelled (a SIGTERM mid-batch) is never acked; its records are read again."""
    if max_events < 1:
        raise ValueError(f"max_events must be at least 1, not {max_events}")
    started_by_us = await stream.maybe_start()
    app = stream.app
    channel = stream.channel
    queue = channel.queue
    consumer = app.consumer
    flow_control = app.flow_control
    acking_topics = app.topics.acking_topics
    add_unacked = consumer._unacked_messages.add
    on_message_in = stream._on_message_in
    on_message_out = stream._on_message_out
    try:
        while not stream.should_stop:
            try:
                items = [await queue.get()]  # raises what was thrown to the channel
            except StopAsyncIteration:
                # faust ends a stream at shutdown by throwing this into its channel; raised out
                # of an async generator it would become a RuntimeError: the agent would crash,
                # its supervisor restart it mid-shutdown and the worker hang until killed.
                return
            while len(items) < max_events and not queue.empty():
                items.append(queue.get_nowait())
            batch: list[EventT[Any]] = []
            for item in items:
                if not isinstance(item, EventT):
                    raise TypeError(f"the stream's channel delivered a non-event: {item!r}")
                message = item.message
                if (
                    not flow_control.is_active()
                    or message.generation_id != app.consumer_generation_id
                ):
                    item.ack()  # untracked: released, not committable (NoSkipConsumer.ack)
                    continue
                if message.topic in acking_topics and not message.tracked:
                    message.tracked = True
                    add_unacked(message)
                    on_message_in(message.tp, message.offset, message)
                batch.append(item)
            if batch:
                yield batch
                if batch_acks:
                    ack_events(consumer, batch, on_message_out)
                else:
                    for event in batch:
                        if event.ack():
                            message = event.message
                            on_message_out(message.tp, message.offset, message)
            await asyncio.sleep(0)  # one loop pass per batch: the fetch loop and the rest run
    finally:
        stream._channel_stop_iteration(channel)
        if started_by_us:
            await stream.stop()
            stream.service_reset()


def ack_events(
    consumer: Any, events: Sequence[EventT[Any]], on_acked: Callable[[TP, int, Any], None]
) -> None:
    """Ack each event of a batch as `Event.ack` does, under one hold of faust's `ack_lock`; the
    stream's message-out sensor (`on_acked`) for each message whose last reference this was.

    Per event this is faust 0.15.3's `Event.ack` → `Message.ack(app.consumer)` with its
    `decref` inlined (each takes the reentrant `ack_lock` again; here it is held for the
    batch): an already acked message is left alone; otherwise its reference count drops by one
    (never below zero) and, at zero, `on_final_ack(consumer)` — for a `ConsumerMessage`,
    `consumer.ack`: `NoSkipConsumer.ack`, which makes the offset committable — decides whether
    the sensor is called, as `Stream.ack` does with `Event.ack`'s result."""
    with ack_lock:
        for event in events:
            message = event.message
            if message.acked:
                continue
            refcount = message.refcount - 1
            message.refcount = refcount if refcount > 0 else 0
            if refcount <= 0 and message.on_final_ack(consumer):
                on_acked(message.tp, message.offset, message)


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


# ---------------------------------------------------------------- faust: offset commits


class NoSkipConsumer(faust_aiokafka.Consumer):
    """faust's aiokafka consumer that never commits past a record it did not process.

    faust 0.15.3 keeps, per partition, the offsets acked since the last commit (`_acked`), the
    last commit (`_committed_offset`, the *next* offset to read, Kafka's meaning), the last offset
    its fetch loop read (`_read_offset`) and holes in the log (`_gap`). Four defects, together,
    let a rebalance lose a record — commit past it unprocessed, or process later records of its
    partition first (issue #22, a lost signal):

    1. `on_partitions_revoked` drops a revoked partition's committed offset and acks *before*
       it runs the app's revocation (wait for the in-flight events, then the final commit), so
       that final commit has no head check at all: whatever was acked after the drop is
       committed, however far it is from the last commit.
    2. `_new_offset`'s head check `min(acked) - committed > 1` lets exactly one record be
       skipped: the one *at* the committed offset (committed=10, acked=[11] commits 12).
    3. The fetch loop records a read offset for a prefetched record whose delivery the
       revocation cancelled, after the drop; `perform_seek` sets the read offset to the
       committed offset (next to read) where the loop means "last read", and `_add_gap` starts
       holes at committed + 1: a hole at the committed offset itself is never recorded. And a
       hole ends *with* the record being delivered, so that record counts as done even if it
       is then released unprocessed.

    Here: the revocation's final commit runs with the partition's bookkeeping intact and the
    bookkeeping is dropped afterwards (and again at assignment, for anything recorded in
    between); the head check is strict (the first acked offset must be the committed one, holes
    included), the read offset after a seek is the last one read, and holes are recorded from the
    committed offset up to the delivered record (excluded); and nothing of a partition is
    committed between its assignment and the seek that reads its committed offset (a late ack
    of the previous generation would otherwise be committed without a head check).
    `tests/unit/compat/test_no_skip_consumer.py` pins each defect in faust and the fix here.

    4. A batch fetched before a rebalance is delivered after it. aiokafka runs in the
       consumer's own thread: the fetch loop awaits a batch drained at the old positions, and
       the rebalance (revocation: stream buffers cleared; assignment; recovery resumes the
       flow) can run on the event loop meanwhile. The loop reads the generation only after the
       await, so the stale batch is stamped with the *new* generation and processed before the
       seek that re-reads the cleared records from the committed offset: later signals of a
       partition pass the watermark first, and the re-read ones are then dropped as stale
       (three signals lost in the rebalance chaos scenario). Likewise records fetched before a
       seek of their partition and delivered after it would be handled out of order (and the
       fetch loop would record the offsets between as a hole in the log: committable).

    Here, for the partitions whose offsets are committed (topics read by agents; changelogs
    are left to faust's recovery, which seeks them itself): records of a batch whose fetch spans
    a rebalance, or a seek of their partition, are not delivered. Whether they were drained at
    the old positions or already at the new ones cannot be told, so the partition is sought
    again to its committed offset, and nothing more of it is delivered until that seek is done
    (if the seek that follows its assignment is still to come or under way, right after it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seeked: set[TP] = set()
        self._seeks = 0  # all seeks: the per-record fast path compares only this
        self._seeks_of: dict[TP, int] = {}  # seeks per partition
        self._fetch_mark: tuple[int, int, dict[TP, int]] = (-1, -1, {})
        self._read_again: set[TP] = set()  # records dropped: nothing delivered until sought
        self._seeking = 0  # a perform_seek under way: it seeks the partitions to read again
        self.stale_batches = 0  # batches with records not delivered: fetched before a change

    async def _getmany(self, active_partitions: Any, timeout: float) -> Any:
        # rebalancing_count is bumped by aiokafka's thread as the revocation starts: the earliest
        # sign of a rebalance, before the event loop hears of it.
        mark = (int(self.app.rebalancing_count), self._seeks, dict(self._seeks_of))
        records = await super()._getmany(active_partitions=active_partitions, timeout=timeout)
        if records and (mark[0], mark[1]) != (self.app.rebalancing_count, self._seeks):
            rebalanced = mark[0] != self.app.rebalancing_count
            acking = self.app.topics.acks_enabled_for
            stale = {
                tp
                for tp in records
                if acking(tp.topic) and (rebalanced or self._seeks_of.get(tp) != mark[2].get(tp))
            }
            if stale:
                self.stale_batches += 1
                log.info(
                    "records fetched before a rebalance or seek not delivered; read again: %s",
                    ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(stale)),
                )
                self._read_again.update(stale)
        if self._read_again:
            # what is sought now is read again from there: this batch's records of it are older
            dropped = self._read_again | await self._seek_to_read_again()
            records = {tp: batch for tp, batch in records.items() if tp not in dropped}
        # a seek from here on, while the batch is delivered, is the per-record check's business
        self._fetch_mark = (int(self.app.rebalancing_count), self._seeks, dict(self._seeks_of))
        return records

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        acking = self.app.topics.acks_enabled_for
        read_again = self._read_again
        async for tp, message in super().getmany(timeout):
            fetched = self._fetch_mark  # set by `_getmany` for this batch
            if (
                self._seeks != fetched[1]  # a seek during the delivery (rare: the slow path)
                and self._seeks_of.get(tp) != fetched[2].get(tp)
                and acking(tp.topic)
            ):
                read_again.add(tp)  # sought again by the next fetch
            if read_again and tp in read_again:
                continue
            yield tp, message

    async def _seek_to_read_again(self) -> set[TP]:
        """Seek the partitions whose records were dropped to their committed offset; returns
        the ones settled (sought, or no longer ours: revoked ones are their next owner's). One
        whose seek after its assignment has not happened yet waits for that seek (perform_seek
        seeks it again at its end)."""
        sought: set[TP] = set()
        if self._seeking:
            return sought
        assigned = self.assignment()
        for tp in sorted(self._read_again):
            if tp not in assigned:
                self._read_again.discard(tp)
                sought.add(tp)  # nothing of it delivered here
                continue
            if tp not in self._seeked:
                continue
            # None: nothing committed yet (faust also keeps a commit at 0 as None): the start
            committed = self._committed_offset.get(tp) or 0
            try:
                await self.seek(tp, committed)
            except IllegalStateError:  # revoked meanwhile: its next owner reads from there
                self._read_again.discard(tp)
                sought.add(tp)  # nothing of it delivered here
                continue
            self._read_offset[tp] = committed - 1 if committed else None
            self._read_again.discard(tp)
            sought.add(tp)
        return sought

    def _sought(self, tps: set[TP]) -> None:
        self._seeks += 1
        for tp in tps:
            self._seeks_of[tp] = self._seeks_of.get(tp, 0) + 1

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._sought({partition})

    def _forget(self, tps: set[TP]) -> None:
        for tp in tps:
            self._seeked.discard(tp)
            self._gap.pop(tp, None)
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._read_offset.pop(tp, None)
            self._committed_offset.pop(tp, None)

    @Service.transitions_to(CONSUMER_PARTITIONS_REVOKED)  # type: ignore[misc]
    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        span = cast(Any, self.app)._start_span_from_rebalancing("on_partitions_revoked")
        T = traced_from_parent_span(span)
        with span:
            if self._active_partitions is not None:
                self._active_partitions.difference_update(revoked)
            self._paused_partitions.difference_update(revoked)
            try:
                await T(self._on_partitions_revoked, partitions=revoked)(revoked)
            finally:
                self._forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # Whatever the fetch loop recorded after the revocation belongs to no assignment.
        self._forget(set(self._read_offset) | set(self._gap) | set(self._acked) | self._seeked)
        await super().on_partitions_assigned(assigned, generation_id)

    async def perform_seek(self) -> None:
        self._seeking += 1
        try:
            await super().perform_seek()
        finally:
            self._seeking -= 1
        self._sought(self.assignment())
        self._seeked.update(self.assignment())
        for tp, committed in list(self._committed_offset.items()):
            if committed:  # the last offset read is the one before the next to read
                self._read_offset[tp] = committed - 1
        # dropped while the seek was under way: they may have been drained after it
        await self._seek_to_read_again()

    def ack(self, message: Any) -> bool:
        """A record the stream skipped unprocessed is never made committable.

        faust's stream skips a record (`value is skipped_value`) when it was fetched in an
        earlier generation *or when flow control is off* (a rebalance under way: a record that
        reached the agent's queue after the revocation cleared it), and acks it all the same;
        stock faust then commits its offset with the next processed ones, although the record
        was never handed to the agent. A skipped record is recognised by `tracked`: the stream
        tracks every record of an acking topic it hands on, and decides to skip before that.
        Such a record, like one of an earlier generation, is only released (no longer waited
        for); the seek that follows the rebalance reads it again and its processed copy is
        acked. Each release of a current-generation skip is logged (it names the offset)."""
        skipped = not message.tracked
        if skipped or message.generation_id != self.app.consumer_generation_id:
            with ack_lock:
                if message.acked:
                    return False
                message.acked = True
                self._unacked_messages.discard(message)
            if skipped and message.generation_id == self.app.consumer_generation_id:
                log.info(
                    "record skipped by the stream (rebalance under way), not committable: "
                    "%s[%s]@%s",
                    message.topic,
                    message.partition,
                    message.offset,
                    extra={"topic": message.topic, "partition": message.partition,
                           "offset": message.offset},
                )  # fmt: skip
            return False
        return bool(super().ack(message))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        committed = self._committed_offset[tp]
        if committed is not None:
            offset_from = max(offset_from, committed)
        # `offset_to` is the record being delivered: the hole ends before it (faust's includes
        # it, so a record released unprocessed there would count as done).
        if offset_from < offset_to:
            self._gap[tp].addi(offset_from, offset_to)
            self._gap[tp].merge_overlaps()

    def _new_offset(self, tp: TP) -> int | None:
        acked = self._acked[tp]
        if not acked or tp not in self._seeked:
            return None
        max_offset = max(acked)
        gap_for_tp = self._gap[tp]
        if gap_for_tp:
            candidates = sorted(gap_for_tp.overlap(0, max_offset), key=lambda x: x.begin)
            if candidates:
                holes: list[int] = []
                for entry in candidates:
                    holes.extend(range(entry.begin, entry.end))
                new_max_offset = max(holes[-1], max_offset + 1)
                acked.extend(holes)
                gap_for_tp.chop(0, new_max_offset)
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is not None:
            while acked and acked[0] < committed:  # already committed (a hole filled twice)
                self._acked_index[tp].discard(acked.pop(0))
            if not acked or acked[0] != committed:
                return None  # the record at the committed offset is not done
        batch = next(consecutive_numbers(acked))
        acked[: len(batch)] = []
        self._acked_index[tp].difference_update(batch)
        return int(batch[-1]) + 1


class _Resumed:
    """The rest of a coroutine already stepped once (`coro.send(None)` gave `yielded`): awaiting
    it drives the coroutine on, as the task running it would have (values, exceptions and
    cancellation pass through)."""

    def __init__(self, coro: Any, yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Any:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, as a task does
                try:
                    yielded = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _finish(coro: Any, yielded: Any) -> Any:
    return await _Resumed(coro, yielded)


def _is_flow_wait(coro: Any) -> bool:
    """Is this the `suspend_flow.wait()` coroutine faust's fetch loop races each delivery with?"""
    return getattr(coro, "cr_code", None) is _EVENT_WAIT_CODE


_EVENT_WAIT_CODE = asyncio.Event.wait.__code__  # faust's consumer flags are asyncio Events


class EagerNoSkipConsumer(NoSkipConsumer):
    """`NoSkipConsumer` whose fetch loop hands a record to the streams without four tasks.

    faust 0.15.3's `Consumer._drain_messages` delivers every record with
    `await self.wait_first(callback(message), self.suspend_flow.wait())`: mode's `wait_first`
    wraps the delivery, the flow-suspension wait and the consumer's `_stopped` and `_crashed`
    waits in four tasks and an `asyncio.wait`, so that a delivery blocked on a full stream
    buffer is abandoned when a rebalance suspends the flow. It is the largest single cost of
    faust's per-record path in the signals stage's profile (B2/B6).

    Here the delivery (`Conductor.on_message`: decode the record into an event, put it on each
    subscribed channel's queue) is first run inline, when the flow is not suspended and the
    consumer neither stopped nor crashed. Most deliveries finish without ever waiting: nothing
    else is needed. A delivery that does wait (a full buffer, flow control) is finished exactly
    as faust does it: raced by `wait_first` against the flow suspension, from where it stopped.
    Nothing about acks or commits changes: the event is acked by the stream when processed, as
    before. `fast` / `raced` count the two paths. `wait_first` is called by nothing else in the
    consumer (the fetch loop's call is recognised by its second argument, `suspend_flow.wait()`;
    any other call goes to mode's as is). Setting `TORGHUT_EAGER_DELIVERY=false` switches it off.
    """

    fast = 0
    raced = 0

    async def wait_first(self, *coros: Any, timeout: Any = None) -> Any:
        if (
            timeout is not None
            or len(coros) != 2
            or not _is_flow_wait(coros[1])
            or not asyncio.iscoroutine(coros[0])
            or self.suspend_flow.is_set()
            or self._stopped.is_set()
            or self._crashed.is_set()
        ):
            return await super().wait_first(*coros, timeout=timeout)
        delivery, flow = coros
        try:
            yielded = delivery.send(None)
        except StopIteration as stop:
            flow.close()
            self.fast += 1
            return WaitResults([delivery], [stop.value], False)
        except BaseException:
            flow.close()  # the delivery's error propagates, as from mode's wait_first
            raise
        self.raced += 1
        return await super().wait_first(_finish(delivery, yielded), flow)


class _LeanRoute:
    """How the lean drain loop hands a partition's records over: the partition's handler (faust's
    Cython `ConductorHandler`, which the conductor builds when faust's extension is installed:
    it is in the pinned wheel), its one channel when that channel's schema builds an event
    synchronously (`event_of`), and the handler's own pressure callbacks, passed with each put
    as the handler passes them. `channel` None: not lean, faust's path."""

    __slots__ = ("channel", "drop", "event_of", "handler", "high")

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.channel: Any = None
        self.event_of: Callable[[AppT, Any], EventT[Any]] | None = None
        self.high: Any = None
        self.drop: Any = None
        if type(handler) is not ConductorHandler:
            return  # faust's pure-Python handler, or none for the partition (its KeyError)
        channels = handler.channels
        if len(channels) != 1:
            return
        (channel,) = channels
        event_of = getattr(channel.schema, "event_of", None)
        if callable(event_of):
            self.channel, self.event_of = channel, event_of
            self.high, self.drop = handler.on_pressure_high, handler.on_pressure_drop


class LeanNoSkipConsumer(EagerNoSkipConsumer):
    """`EagerNoSkipConsumer` whose fetch loop hands a fetched batch over without faust's
    per-record machinery (`TORGHUT_LEAN_DRAIN`).

    faust 0.15.3 delivers each record through two async generators (`Consumer.getmany`, and
    `NoSkipConsumer.getmany`'s seek check over it), then `Consumer._drain_messages`, then
    `wait_first(callback(message), ...)`, then `Conductor.on_message` (an `asyncio.Lock` taken
    and released), then the partition's handler (faust's Cython `ConductorHandler`: awaits the
    flow control and the producer buffer — `ProducerBuffer.size` reads a setting each time —
    then the channel's coroutine decode), and finally puts the event on the channel's queue.
    About a fifth of the signals stage's CPU per signal (py-spy, bench B6).

    `_drain_messages` here is those functions fused into one loop, with the same checks in the
    same order per record (flow active, generation, active partition; the seek check; the read
    offset, holes and `commit_every`), and a record of a partition with one subscribed channel
    whose schema builds events synchronously (`event_of`: `streams.topics.RawBytes`, the
    signals topic) handed over inline: the reference count, the event, `put_nowait_enhanced`
    with the handler's own pressure callbacks — exactly what the handler does on its path that
    does not wait. Whether that path could wait is decided once per stretch without an await,
    not per record (`_lean_ready`): flow control active, producer buffer not over its limit, the
    conductor's lock free, the flow not suspended, the consumer neither stopped nor crashed.
    Nothing that can change these runs between two records unless the loop awaits (the event
    loop is single-threaded and they are only changed on it), and after each await it checks
    again. Anything else — a full queue, another topic, a locked conductor, a suspended flow —
    goes through faust's path as before (`wait_first(callback(message), suspend_flow.wait())`,
    `EagerNoSkipConsumer`). The end offsets the monitor tracks are updated once per partition
    per fetched batch instead of once per record (the latest wins either way).

    Acks, commits and the rebalance protections of `NoSkipConsumer` are untouched: the event is
    acked by the stream when processed, the records dropped by the seek check are not delivered.
    `lean` counts the records handed over inline. `tests/unit/compat/test_lean_drain.py` pins
    faust's functions fused here and checks the loop against faust's own on the same batches."""

    lean = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lean_routes: dict[TP, _LeanRoute] = {}

    def _lean_ready(self) -> bool:
        """May a record be handed over now without waiting (faust's handler would not await)?"""
        app = self.app
        lock = cast(Any, app.topics)._tp_to_callback_lock
        buffer = cast(Any, app.producer).buffer
        return bool(
            not self.suspend_flow.is_set()
            and not self._stopped.is_set()
            and not self._crashed.is_set()
            and app.flow_control.is_active()
            and buffer.size <= buffer.max_messages
            and not lock.locked()
            and not lock._waiters  # asyncio.Lock: an acquire would queue behind a waiter
        )

    def _lean_route(self, tp: TP) -> _LeanRoute:
        handler = cast(Any, self.app.topics)._tp_to_callback.get(tp)
        route = self._lean_routes.get(tp)
        if route is None or route.handler is not handler:
            route = self._lean_routes[tp] = _LeanRoute(handler)
        return route

    def _deliver_inline(self, tp: TP, message: Any) -> bool:
        """Hand the record to its channel as faust's handler does when nothing waits; False
        (nothing done) when that handler would wait or is not a lean one."""
        route = self._lean_route(tp)
        channel = route.channel
        if channel is None or route.event_of is None:
            return False
        queue = channel.queue
        if queue.full():
            return False
        message.refcount += 1  # as the handler: `incref(n)` for its n (here one) channels
        queue.put_nowait_enhanced(
            route.event_of(self.app, message), on_pressure_high=route.high,
            on_pressure_drop=route.drop,
        )  # fmt: skip
        self.lean += 1
        return True

    async def _drain_messages(self, fetcher: Any) -> None:
        app = self.app
        if app.client_only:
            await super()._drain_messages(fetcher)
            return
        callback = self.callback
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        set_flag = self.diag.set_flag
        unset_flag = self.diag.unset_flag
        commit_every = self._commit_every
        acks_enabled_for = app.topics.acks_enabled_for
        to_message = self._to_message
        track_tp_end_offset = app.monitor.track_tp_end_offset
        read_again = self._read_again
        suspend_flow = self.suspend_flow
        deliver_inline = self._deliver_inline
        yield_every = 100
        num_since_yield = 0
        sleep = asyncio.sleep
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                await self.sleep(0)
                if self.should_stop:
                    continue
                # -- faust's Consumer.getmany
                records, active_partitions = await self._wait_next_records(1.0)
                generation_id = app.consumer_generation_id
                if records is None or self.should_stop:
                    unset_flag(CONSUMER_FETCHING)
                    continue
                if not self.flow_active:
                    log.debug("getmany called while flow not active: seek to committed")
                    try:
                        await self.perform_seek()
                    except Exception as ex:  # noqa: BLE001 - as faust: logged, loop goes on
                        log.warning("exception performing seek when flow not active %s", ex)
                    unset_flag(CONSUMER_FETCHING)
                    continue
                fetched = self._fetch_mark  # set by `_getmany` for this batch
                tracked_end: set[TP] = set()
                ready = False
                for tp, record in self.scheduler.iterate(records):
                    if not self.flow_active:
                        break
                    if app.consumer_generation_id != generation_id:
                        break
                    if not (
                        active_partitions is None
                        or tp in active_partitions
                        or tp in self._buffered_partitions
                    ):
                        continue
                    if tp not in tracked_end:
                        tracked_end.add(tp)
                        track_tp_end_offset(tp, self.highwater(tp))
                    message = to_message(tp, record)
                    # -- NoSkipConsumer.getmany
                    if (
                        self._seeks != fetched[1]
                        and self._seeks_of.get(tp) != fetched[2].get(tp)
                        and acks_enabled_for(tp.topic)
                    ):
                        read_again.add(tp)
                    if read_again and tp in read_again:
                        continue
                    # -- faust's Consumer._drain_messages
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                        ready = False
                    offset = message.offset
                    r_offset = read_offset[tp]
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                            ready = False
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                            ready = False
                        if not ready:
                            ready = self._lean_ready()
                        if not (ready and deliver_inline(tp, message)):
                            await self.wait_first(callback(message), suspend_flow.wait())
                            ready = False
                        read_offset[tp] = offset
                unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)


class NoSkipTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `NoSkipConsumer`."""

    Consumer = NoSkipConsumer


class EagerNoSkipTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `EagerNoSkipConsumer`."""

    Consumer = EagerNoSkipConsumer


class LeanNoSkipTransport(faust_aiokafka.Transport):
    """faust's aiokafka transport with `LeanNoSkipConsumer`."""

    Consumer = LeanNoSkipConsumer


def no_skip_transport(app: AppT, eager_delivery: bool = False, lean_drain: bool = False) -> Any:
    """The transport `TorghutApp._new_transport` builds: faust's choice by the broker URL, with
    `NoSkipConsumer` when that is faust's aiokafka transport (it is for `kafka://`):
    `EagerNoSkipConsumer` with `eager_delivery`, `LeanNoSkipConsumer` with both (the lean loop
    falls back to the eager delivery)."""
    from faust.transport import by_url

    conf = app.conf
    chosen = by_url(conf.broker_consumer[0])
    ours: type[faust_aiokafka.Transport] = NoSkipTransport
    if eager_delivery:
        ours = LeanNoSkipTransport if lean_drain else EagerNoSkipTransport
    cls = ours if chosen is faust_aiokafka.Transport else chosen
    return cls(conf.broker_consumer, app)


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


def without_connection_retry(session: Any) -> Any:
    """An aiohttp `ClientSession` that never resends a request: aiohttp 3.14 resends a GET, PUT
    or DELETE once when a reused keep-alive connection turns out closed (no public switch; its
    own test client turns it off the same way). A DELETE /v2/positions the broker may already
    have carried out is not sent twice; alpaca-py (requests, no retries) never resent either."""
    session._retry_connection = False
    return session


def rest_request_defaults(client: Any) -> tuple[str, dict[str, str]]:
    """The URL prefix (`<base url>/<api version>`) and the headers (credentials, user agent)
    alpaca-py's `RESTClient._request` puts on every request of this client."""
    prefix = f"{client._base_url}/{client._api_version}"
    return prefix, dict(client._get_default_headers())


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
