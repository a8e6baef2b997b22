"""`compat.event_batches`: the signals agent's batch hand-off (`TORGHUT_SIGNAL_BATCH_MAX`).

What it does per event mirrors faust 0.15.3's stream iterator; the faust internals it relies on
are pinned here (an upgrade that changes one fails here), beside its behaviour on a real faust
app, stream and channel with the project's `NoSkipConsumer`: batches of what is queued, each
event tracked before it is handed on, acked only once the loop body for its batch completed
(never when it raised or was cancelled), a record skipped in a rebalance released uncommittable.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.events import Event
from faust.types import TP
from faust.types.tuples import ConsumerMessage
from mode.utils.queues import ThrowableQueue

from streams import compat

TP0 = TP("signals", 0)


def _squash(text: str) -> str:
    """The source without comments and whitespace."""
    return re.sub(r"\s+", "", re.sub(r"#[^\n]*", "", text))


def test_faust_stream_iterator_does_what_event_batches_mirrors() -> None:
    from faust.streams import Stream

    source = _squash(inspect.getsource(Stream._py_aiter))
    # skipped before it is tracked: flow control off, or an earlier generation
    skip = source.index(
        "if(notself.app.flow_control.is_active()"
        "ormessage.generation_id!=self.app.consumer_generation_id):"
    )
    track = source.index(
        "iftopicinacking_topicsandnotmessage.tracked:message.tracked=True"
        "add_unacked(message)on_message_in(message.tp,message.offset,message)"
    )
    assert skip < source.index("value=skipped_value") < track
    assert "acking_topics:Set[str]=self.app.topics.acking_topics" in source
    assert "unacked:Set[Message]=consumer.unacked" in source
    assert "chan_queue=chan.queue" in source and "chan_quick_get=chan_queue.get_nowait" in source
    assert "self._channel_stop_iteration(channel)" in source
    assert "started_by_aiter=awaitself.maybe_start()" in source
    # the ack after the body: the event's message, then the message-out sensor on its last ack
    ack = _squash(inspect.getsource(Stream.ack))
    assert "last_stream_to_ack=event.ack()" in ack
    assert "iflast_stream_to_ack:self._on_message_out(tp,offset,message)" in ack
    # the agent's stream has no processors to run
    assert "forprocessorinprocessors:" in source
    # the Cython iterator faust runs when built (it is here) decides the same way
    import faust._cython

    pyx = _squash((Path(faust._cython.__file__).parent / "streams.pyx").read_text())
    skip = pyx.index(
        "if(notself.app.flow_control.is_active()"
        "ormessage.generation_id!=self.app.consumer_generation_id):"
    )
    assert (
        skip
        < pyx.index("returnNone,self._skipped_value,stream_state")
        < pyx.index(
            "iftopicinself.acking_topicsandnotmessage.tracked:message.tracked=True"
            "self.add_unacked(message)self.on_message_in(tp,offset,message)"
        )
    )


def _app() -> faust.App:
    app = faust.App("event-batches-test", broker="kafka://127.0.0.1:9")
    app.transport.Consumer = compat.NoSkipConsumer  # type: ignore[misc]
    app.finalize()
    app.topics._acking_topics.add(TP0.topic)  # an agent reads it
    app.flow_control.resume()  # as after an assignment
    consumer: Any = app.consumer
    consumer._committed_offset[TP0] = 0
    consumer._seeked.add(TP0)
    return app


def _event(app: faust.App, offset: int, generation_id: int | None = None) -> Event:
    generation = app.consumer_generation_id if generation_id is None else generation_id
    message = ConsumerMessage(
        TP0.topic, TP0.partition, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation
    )
    message.incref()  # the conductor: one reference per channel it delivers to
    return Event(app, b"k", b"v", {}, message)


def _stream(app: faust.App, *events: Event) -> Any:
    stream: Any = app.stream(app.channel())
    queue = stream.channel.queue  # the queue the conductor delivers the agent's records to
    assert isinstance(queue, ThrowableQueue)
    for event in events:
        queue.put_nowait(event)
    return stream


def _committable(app: faust.App) -> int | None:
    consumer: Any = app.consumer
    return consumer._new_offset(TP0)


def test_the_app_consumer_here_is_the_no_skip_one() -> None:
    assert isinstance(_app().consumer, compat.NoSkipConsumer)


@pytest.mark.parametrize("batch_acks", [True, False])
async def test_batches_are_what_is_queued_tracked_and_acked_only_after_their_body(
    batch_acks: bool,
) -> None:
    app = _app()
    events = [_event(app, offset) for offset in range(5)]
    batches = compat.event_batches(_stream(app, *events), 3, batch_acks)
    first = await batches.__anext__()
    assert [e.message.offset for e in first] == [0, 1, 2]
    assert all(e.message.tracked for e in first)
    unacked: set[Any] = app.consumer._unacked_messages  # type: ignore[attr-defined]
    assert {e.message for e in first} <= unacked  # a rebalance waits for them
    assert not any(e.message.acked for e in first) and _committable(app) is None

    second = await batches.__anext__()  # the body for `first` completed
    assert [e.message.offset for e in second] == [3, 4]
    assert all(e.message.acked for e in first) and not any(e.message.acked for e in second)
    assert _committable(app) == 3
    await batches.aclose()


async def test_a_batch_whose_body_raised_or_was_cancelled_is_never_acked() -> None:
    app = _app()
    events = [_event(app, 0), _event(app, 1)]
    stream = _stream(app, *events)
    started = asyncio.Event()

    async def agent() -> None:
        async for _batch in compat.event_batches(stream, 10):
            started.set()
            await asyncio.sleep(3600)  # publishing its decisions when SIGTERM arrives

    task = asyncio.create_task(agent())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(e.message.acked for e in events) and _committable(app) is None

    app2 = _app()
    failing = [_event(app2, 0)]

    async def crashing() -> None:
        async for _batch in compat.event_batches(_stream(app2, *failing), 10):
            raise RuntimeError("Kafka unavailable")

    with pytest.raises(RuntimeError):
        await crashing()
    assert not failing[0].message.acked and _committable(app2) is None


async def test_records_skipped_in_a_rebalance_are_released_never_committable() -> None:
    app = _app()
    app.consumer_generation_id = 2
    old = _event(app, 0, generation_id=1)  # fetched in an earlier generation
    batches = compat.event_batches(_stream(app, old, _event(app, 1)), 10)
    (handed,) = await batches.__anext__()
    assert handed.message.offset == 1
    assert old.message.acked and not old.message.tracked  # released: a rebalance won't wait
    await batches.aclose()  # the body for offset 1 never completed: not acked either

    late = _event(app, 2)
    stream = _stream(app, late)
    app.flow_control.suspend()  # a rebalance under way: what is still queued is skipped
    getting = asyncio.ensure_future(compat.event_batches(stream, 10).__anext__())
    await asyncio.sleep(0.05)
    assert not getting.done()  # nothing handed on
    getting.cancel()
    assert late.message.acked and not late.message.tracked
    assert _committable(app) is None  # nothing of offsets 0-2 is committable


async def test_an_error_thrown_to_the_channel_reaches_the_agent() -> None:
    app = _app()
    stream = _stream(app)
    stream.channel.queue._throw(KeyError("decode failed"))
    with pytest.raises(KeyError):
        await compat.event_batches(stream, 10).__anext__()


async def test_the_stream_ending_at_shutdown_ends_the_batches_without_an_error() -> None:
    """faust stops a stream by throwing StopAsyncIteration into its channel; out of an async
    generator that became a RuntimeError: the agent crashed, its supervisor restarted it during
    the shutdown, and the worker hung until killed (every SIGTERM: 30 s per test worker)."""
    app = _app()
    stream = _stream(app)
    stream.channel.queue._throw(StopAsyncIteration())
    assert [batch async for batch in compat.event_batches(stream, 10)] == []


async def test_max_events_must_be_positive() -> None:
    with pytest.raises(ValueError):
        await compat.event_batches(_stream(_app()), 0).__anext__()


# ---------------------------------------------------------------- the batch's acks


def test_faust_ack_path_is_what_ack_events_inlines() -> None:
    from faust.types.tuples import Message, ack_lock

    event_ack = _squash(inspect.getsource(Event.ack))
    assert event_ack.endswith("returnself.message.ack(self.app.consumer)")
    message_ack = _squash(inspect.getsource(Message.ack))
    assert (
        "withack_lock:ifnotself.acked:ifnotself.decref(n):returnself.on_final_ack(consumer)"
        "returnFalse" in message_ack
    )
    assert "refcount=self.refcount=max(self.refcount-n,0)returnrefcount" in _squash(
        inspect.getsource(Message.decref)
    )
    assert "returnconsumer.ack(self)" in _squash(inspect.getsource(ConsumerMessage.on_final_ack))
    assert "self.acked=TruereturnTrue" in _squash(inspect.getsource(Message.on_final_ack))
    assert type(ack_lock).__name__ == "RLock"  # reentrant: consumer.ack takes it again
    assert compat.ack_lock is ack_lock


def _acking_cases(app: faust.App) -> list[Event]:
    """Last reference; one more reference left; already acked; acked twice in the batch; an
    untracked (skipped) record; a plain Message (not a consumer's)."""
    from faust.types.tuples import Message

    events = [_event(app, offset) for offset in range(4)]
    for e in events:
        e.message.tracked = True
        app.consumer._unacked_messages.add(e.message)  # type: ignore[attr-defined]
    events[1].message.incref()  # another stream holds it too
    events[2].message.acked = True
    skipped = _event(app, 4)  # never tracked: released, not committable (NoSkipConsumer.ack)
    plain = Message(TP0.topic, TP0.partition, 5, 0.0, 0, None, b"k", b"v", None)
    plain.incref()
    return [*events, events[3], skipped, Event(app, b"k", b"v", {}, plain)]


def _ack_state(app: faust.App, events: list[Event]) -> tuple[Any, ...]:
    consumer: Any = app.consumer
    return (
        [(e.message.acked, e.message.refcount) for e in events],
        list(consumer._acked[TP0]),
        consumer._n_acked,
        sorted(m.offset for m in consumer._unacked_messages),
        _committable(app),
    )


def test_ack_events_acks_a_batch_exactly_as_event_ack_one_by_one() -> None:
    by_faust, by_batch = _app(), _app()
    faust_events, batch_events = _acking_cases(by_faust), _acking_cases(by_batch)
    faust_out: list[int] = []
    for event in faust_events:  # Stream.ack: Event.ack, then the sensor on its True
        if event.ack():
            faust_out.append(event.message.offset)
    batch_out: list[int] = []
    compat.ack_events(
        by_batch.consumer, batch_events, lambda tp, offset, m: batch_out.append(offset)
    )
    assert batch_out == faust_out == [0, 3, 5]
    state = _ack_state(by_batch, batch_events)  # (reading what is committable consumes it)
    assert state == _ack_state(by_faust, faust_events)
    assert state[4] == 1  # offset 1 still held by another stream: committable up to it
