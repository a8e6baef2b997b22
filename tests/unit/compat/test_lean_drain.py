"""`compat.LeanNoSkipConsumer` (`TORGHUT_LEAN_DRAIN`): faust's per-record fetch path fused into one
loop that hands a record of the signals topic to its agent's queue inline.

The faust functions fused there are pinned by their source (an upgrade that changes one fails
here: re-read `LeanNoSkipConsumer._drain_messages` against the new source, then update the
digest), and the loop is run beside faust's own (`EagerNoSkipConsumer`, the stock
`_drain_messages`) on the same fetched batches: the same events reach the channels, in the same
order, with the same read offsets, holes and dropped partitions.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition
from faust.transport import conductor as faust_conductor
from faust.transport import consumer as faust_consumer
from faust.transport import producer as faust_producer
from faust.transport._cython import conductor as faust_cython_conductor
from faust.transport._cython.conductor import ConductorHandler
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.utils.queues import FlowControlEvent

from streams import compat
from streams.settings import Settings
from streams.topics import RawBytes

SIGNALS = "signals"
LANES = "lanes"
TP0, TP1, TPL = TP(SIGNALS, 0), TP(SIGNALS, 1), TP(LANES, 0)


def _squash(text: str) -> str:
    """The source without comments and whitespace."""
    return re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", text))


def _digest(obj: Any) -> str:
    return hashlib.sha256(_squash(inspect.getsource(obj)).encode()).hexdigest()[:16]


# What `LeanNoSkipConsumer._drain_messages` fuses and reproduces: a change to any of these in a
# faust/mode upgrade must be re-read against it (then update the digest here).
FUSED = {
    "Consumer._drain_messages": (faust_consumer.Consumer._drain_messages, "3cc2d2bad16e1c55"),
    "Consumer.getmany": (faust_consumer.Consumer.getmany, "8468d6f9e1410d41"),
    "Conductor._compile_message_handler": (
        faust_conductor.Conductor._compile_message_handler,
        "2f8efeac593a479e",
    ),
    "Conductor._build_handler": (faust_conductor.Conductor._build_handler, "3028879c590822c0"),
    "ProducerBuffer.wait_until_ebb": (
        faust_producer.ProducerBuffer.wait_until_ebb,
        "4903c5408acf45e7",
    ),
    "FlowControlEvent.acquire": (FlowControlEvent.acquire, "4d91fbce4a0a45b7"),
    "aiokafka Consumer._to_message": (faust_aiokafka.Consumer._to_message, "e20ceb92c6ecc527"),
    # ours: the lean loop repeats its per-record seek check (change both together)
    "NoSkipConsumer.getmany": (compat.NoSkipConsumer.getmany, "c7512c9908fcfc92"),
}


# The partition handler the conductor builds (faust's Cython extension, in the pinned wheel).
HANDLER_PYX = Path(faust_cython_conductor.__file__).with_name("conductor.pyx")
HANDLER_PYX_DIGEST = "eb2876ef3b76a90e"


@pytest.mark.parametrize("name", sorted(FUSED))
def test_the_faust_functions_fused_in_the_lean_loop_are_the_pinned_ones(name: str) -> None:
    function, digest = FUSED[name]
    assert _digest(function) == digest, f"{name} changed: re-read LeanNoSkipConsumer against it"


def test_the_partition_handler_is_the_pinned_cython_one() -> None:
    digest = hashlib.sha256(_squash(HANDLER_PYX.read_text()).encode()).hexdigest()[:16]
    assert digest == HANDLER_PYX_DIGEST, "ConductorHandler changed: re-read LeanNoSkipConsumer"
    assert faust_conductor.ConductorHandler is ConductorHandler  # the conductor builds it
    app = _app(compat.LeanNoSkipConsumer)
    assert type(app.topics._tp_to_callback[TP0]) is ConductorHandler


def test_what_the_inline_hand_over_relies_on_in_fausts_handler() -> None:
    build = _squash(HANDLER_PYX.read_text())
    call = build[build.index("asyncdef__call__(self,objectmessage):") :]
    # the handler's only awaits before the put: flow control, the producer buffer, the decode
    assert "awaitself.acquire_flow_control()awaitself.wait_until_producer_ebb()" in call
    assert "channels=self.channelschannels_n=len(channels)" in call
    assert "message.refcount+=channels_n" in call
    assert "event=awaitchan.decode(message,propagate=True)" in call
    assert "ifnotself._put(dest_event,chan,full):continue" in call
    assert (
        "queue=channel.queueifqueue.full():full.append((event,channel))returnFalse"
        "else:queue.put_nowait_enhanced(value=event,on_pressure_high=self.on_pressure_high,"
        "on_pressure_drop=self.on_pressure_drop,)returnTrue" in call
    )
    # the conductor takes its lock around the handler lookup only
    handler = _squash(inspect.getsource(faust_conductor.Conductor._compile_message_handler))
    assert "asyncwithself._tp_to_callback_lock:callback=get_callback_for_tp(message.tp)" in handler
    # the producer buffer waits only over its limit; flow control only when suspended
    ebb = _squash(inspect.getsource(faust_producer.ProducerBuffer.wait_until_ebb))
    assert (
        ebb.startswith("asyncdefwait_until_ebb(self)->None:")
        and "ifself.size>self.max_messages" in ebb
    )
    assert "ifself._suspend.is_set():awaitself._resume.wait()" in _squash(
        inspect.getsource(FlowControlEvent.acquire)
    )
    # asyncio.Lock: an unlocked lock with a live waiter makes a new acquire wait
    assert "self._waiters" in inspect.getsource(asyncio.Lock.acquire)


# ---------------------------------------------------------------- the loop beside faust's


def _record(tp: TP, offset: int, headers: tuple[tuple[str, bytes], ...] = ()) -> ConsumerRecord:
    value = f"{tp.topic}-{tp.partition}-{offset}".encode()
    return ConsumerRecord(
        tp.topic, tp.partition, offset, 1_000 + offset, 0, b"key", value, None, 3, len(value),
        headers,
    )  # fmt: skip


Batch = dict[TP, list[ConsumerRecord]]


def _app(cls: type[Any], *, signals_schema: Any = None) -> Any:
    app: Any = faust.App(f"lean-{cls.__name__}", broker="kafka://127.0.0.1:9")
    app.transport.Consumer = cls
    app.finalize()
    schema = signals_schema or RawBytes(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    signals = app.topic(SIGNALS, schema=schema)
    lanes = app.topic(
        LANES, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    conductor = app.topics
    for tp, channel in ((TP0, signals), (TP1, signals), (TPL, lanes)):
        conductor._tp_index[tp].add(channel)
        conductor._acking_topics.add(tp.topic)
    conductor._update_callback_map()
    app.flow_control.resume()
    app.consumer._active_partitions = {TP0, TP1, TPL}
    app.consumer.highwater = lambda tp: 10_000
    app.channels = {SIGNALS: signals, LANES: lanes}
    return app


async def _drain(
    app: Any, batches: list[Batch], during: Callable[[Any], None] | None = None
) -> Any:
    """Run the consumer's fetch loop over `batches` (then stop it); `during` runs after each
    fetch, before its records are delivered (a seek, a rebalance)."""
    consumer = app.consumer
    fetcher: Any = type("Fetcher", (), {})()
    fetcher._stopped = asyncio.Event()
    pending = list(batches)

    async def wait_next_records(timeout: float) -> Any:
        if not pending:
            fetcher._stopped.set()
            return None, None
        # what NoSkipConsumer._getmany marks for the batch
        consumer._fetch_mark = (
            int(app.rebalancing_count),
            consumer._seeks,
            dict(consumer._seeks_of),
        )
        if during is not None:
            during(consumer)
        return pending.pop(0), None

    consumer._wait_next_records = wait_next_records
    await asyncio.wait_for(consumer._drain_messages(fetcher), 10)
    return consumer


def _queued(app: Any, name: str) -> list[tuple[Any, ...]]:
    queue = app.channels[name].queue
    out = []
    while not queue.empty():
        event = queue.get_nowait()
        m = event.message
        out.append(
            (type(event), m.tp, m.offset, event.key, event.value, event.headers, m.refcount,
             m.generation_id, m.timestamp, m.serialized_value_size)
        )  # fmt: skip
    return out


def _state(consumer: Any) -> tuple[Any, ...]:
    return (
        dict(consumer._read_offset),
        {tp: sorted((i.begin, i.end) for i in tree) for tp, tree in consumer._gap.items()},
        set(consumer._read_again),
    )


async def _both(batches: list[Batch], during: Callable[[Any], None] | None = None) -> Any:
    results = []
    for cls in (compat.EagerNoSkipConsumer, compat.LeanNoSkipConsumer):
        app = _app(cls)
        consumer = await _drain(app, batches, during)
        results.append((_queued(app, SIGNALS), _queued(app, LANES), _state(consumer), consumer))
    return results


async def test_the_lean_loop_delivers_what_fausts_delivers_and_hands_signals_over_inline() -> None:
    batches: list[Batch] = [
        {TP0: [_record(TP0, o) for o in range(3)], TP1: [_record(TP1, o) for o in range(2)]},
        # a hole in the log at TP0 (offsets 3-5 compacted away), headers, the lanes' topic
        {
            TP0: [_record(TP0, 6, (("replay", b"x"), ("h", b"1")))],
            TP1: [_record(TP1, 2)],
            TPL: [_record(TPL, 0), _record(TPL, 1)],
        },
    ]
    (f_sig, f_lanes, f_state, faust_side), (l_sig, l_lanes, l_state, lean) = await _both(batches)
    assert len(f_sig) == 7 and len(f_lanes) == 2
    assert l_sig == f_sig and l_lanes == f_lanes
    assert l_state == f_state
    assert f_state[1] == {TP0: [(3, 6)]}  # the hole, up to the delivered record (excluded)
    assert lean.lean == 7  # every signal inline; the lanes' records through faust's path
    assert lean.fast == 2 and faust_side.fast == 9


async def test_a_partition_sought_since_its_fetch_is_dropped_as_by_no_skip_getmany() -> None:
    def seek_tp1(consumer: Any) -> None:
        consumer._sought({TP1})

    batches: list[Batch] = [
        {TP0: [_record(TP0, 0)], TP1: [_record(TP1, 0), _record(TP1, 1)]},
    ]
    (f_sig, _, f_state, _), (l_sig, _, l_state, lean) = await _both(batches, seek_tp1)
    assert [row[1:3] for row in l_sig] == [(TP0, 0)] and l_sig == f_sig
    assert l_state == f_state and TP1 in l_state[2]  # read again from its committed offset
    assert lean.lean == 1


async def test_a_rebalance_during_a_delivery_stops_the_batch_as_in_faust() -> None:
    """A delivery that awaits (faust's path: here the lanes' topic) may let a rebalance run: the
    rest of the batch is not delivered (a new generation), by either loop."""

    def rebalance_on_lane_delivery(consumer: Any) -> None:
        conductor = consumer.app.topics
        deliver = conductor._tp_to_callback[TPL]

        async def delivered_then_rebalanced(message: Any) -> None:
            await deliver(message)
            consumer.app.consumer_generation_id += 1

        conductor._tp_to_callback[TPL] = delivered_then_rebalanced

    batches: list[Batch] = [
        {TPL: [_record(TPL, 0), _record(TPL, 1)], TP0: [_record(TP0, 0), _record(TP0, 1)]}
    ]
    (f_sig, f_lanes, f_state, _), (l_sig, l_lanes, l_state, _) = await _both(
        batches, rebalance_on_lane_delivery
    )
    assert len(f_lanes) == 1 and len(f_sig) + len(f_lanes) < 4
    assert (l_sig, l_lanes, l_state) == (f_sig, f_lanes, f_state)


async def test_flow_stopped_during_the_fetch_delivers_nothing_as_in_faust() -> None:
    def stop_flow(consumer: Any) -> None:
        consumer.flow_active = False  # a revocation started

    batches: list[Batch] = [{TP0: [_record(TP0, 0)]}]
    (f_sig, _, f_state, _), (l_sig, _, l_state, _) = await _both(batches, stop_flow)
    assert f_sig == l_sig == [] and f_state == l_state


def _ready_app() -> Any:
    app = _app(compat.LeanNoSkipConsumer)
    assert app.consumer._lean_ready()
    return app


@pytest.mark.parametrize(
    "condition",
    ["flow control suspended", "producer buffer over", "conductor locked", "flow suspended",
     "consumer stopped", "consumer crashed"],
)  # fmt: skip
async def test_nothing_is_handed_over_inline_when_fausts_handler_would_wait(condition: str) -> None:
    app = _ready_app()
    consumer = app.consumer
    if condition == "flow control suspended":
        app.flow_control.suspend()
    elif condition == "producer buffer over":
        buffer = app.producer.buffer
        for i in range(buffer.max_messages + 1):
            buffer.pending.put_nowait(i)
    elif condition == "conductor locked":
        await app.topics._tp_to_callback_lock.acquire()
    elif condition == "flow suspended":
        consumer.suspend_flow.set()
    elif condition == "consumer stopped":
        consumer._stopped.set()
    else:
        consumer._crashed.set()
    assert not consumer._lean_ready()


async def test_an_unlocked_conductor_lock_with_a_waiter_is_not_free() -> None:
    app = _ready_app()
    lock = app.topics._tp_to_callback_lock
    await lock.acquire()
    waiter = asyncio.ensure_future(lock.acquire())  # the resubscription, queued
    await asyncio.sleep(0)
    lock.release()  # unlocked, the waiter not yet woken: an acquire now would queue
    assert not app.consumer._lean_ready()
    await waiter
    lock.release()
    assert app.consumer._lean_ready()


async def test_a_full_queue_or_another_schema_goes_through_fausts_path() -> None:
    app = _ready_app()
    consumer = app.consumer
    message = consumer._to_message(TP0, _record(TP0, 0))
    queue = app.channels[SIGNALS].queue
    for i in range(queue.maxsize):
        queue.put_nowait(i)
    assert not consumer._deliver_inline(TP0, message) and message.refcount == 0
    lanes = consumer._to_message(TPL, _record(TPL, 0))
    assert not consumer._deliver_inline(TPL, lanes) and lanes.refcount == 0

    plain = _app(compat.LeanNoSkipConsumer, signals_schema=faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ))  # fmt: skip
    assert not plain.consumer._deliver_inline(TP0, plain.consumer._to_message(TP0, _record(TP0, 1)))


async def test_the_route_follows_the_conductors_rebuilt_handlers() -> None:
    app = _ready_app()
    consumer = app.consumer
    first = consumer._lean_route(TP0)
    assert consumer._lean_route(TP0) is first  # cached while the handler is the same
    app.topics._update_callback_map()  # an assignment rebuilds every handler
    assert consumer._lean_route(TP0) is not first
    del app.topics._tp_to_callback[TP1]
    assert consumer._lean_route(TP1).channel is None  # no handler: faust's path (its KeyError)


async def test_the_pressure_callbacks_are_the_handlers_own() -> None:
    app = _ready_app()
    consumer = app.consumer
    handler = app.topics._tp_to_callback[TP1]
    route = consumer._lean_route(TopicPartition(SIGNALS, 1))  # the fetch's keys are aiokafka's
    assert route.high == handler.on_pressure_high and route.drop == handler.on_pressure_drop
    route.high()  # the partition paused as faust's TP (faust asserts the type of each)
    assert consumer._buffered_partitions == {TP1}
    assert all(type(tp) is TP for tp in consumer._buffered_partitions)
    route.drop()
    assert consumer._buffered_partitions == set()


async def test_a_queue_under_pressure_pauses_the_partition_as_fausts_handler_does() -> None:
    app = _ready_app()
    consumer = app.consumer
    queue = app.channels[SIGNALS].queue
    for offset in range(queue.pressure_high_size + 1):
        fetched_tp = TopicPartition(SIGNALS, 0)
        assert consumer._deliver_inline(
            fetched_tp, consumer._to_message(fetched_tp, _record(TP0, offset))
        )
    assert consumer._buffered_partitions == {TP0}
    while not queue.empty():
        queue.get_nowait()  # the agent drains it: the pressure drops, the partition resumes
    assert consumer._buffered_partitions == set()
    consumer._get_active_partitions()  # faust's own check of the partitions' types passes


async def test_a_pure_python_handler_is_not_taken_inline() -> None:
    app = _ready_app()
    conductor = app.topics
    conductor._tp_to_callback[TP0] = conductor._compiler.build(
        conductor, TP0, conductor._tp_index[TP0]
    )
    assert app.consumer._lean_route(TP0).channel is None


def test_the_settings_pick_the_consumer() -> None:
    app = faust.App("lean-setting-test", broker="kafka://127.0.0.1:9")
    chosen = {
        (eager, lean): compat.no_skip_transport(app, eager_delivery=eager, lean_drain=lean).Consumer
        for eager in (True, False)
        for lean in (True, False)
    }
    assert chosen == {
        (True, True): compat.LeanNoSkipConsumer,
        (True, False): compat.EagerNoSkipConsumer,
        (False, True): compat.NoSkipConsumer,
        (False, False): compat.NoSkipConsumer,
    }
    assert issubclass(compat.LeanNoSkipConsumer, compat.EagerNoSkipConsumer)
    assert Settings().lean_drain is True
    assert Settings(TORGHUT_LEAN_DRAIN=False).lean_drain is False  # type: ignore[call-arg]
