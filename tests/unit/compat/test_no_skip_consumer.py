"""`compat.NoSkipConsumer`: each faust 0.15.3 offset-commit defect it fixes, pinned in faust (an
upgrade that fixes or changes one fails here) beside the behaviour of the fix (issue #22: a
signal lost in a rebalance)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust
import pytest
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import compat

TP0 = TP("signals", 0)
OnRevoked = Callable[[set[TP]], Awaitable[None]]


async def _nothing(*args: Any) -> None:
    return None


def _consumer(cls: type[Any], on_revoked: OnRevoked = _nothing) -> Any:
    app = faust.App("no-skip-test", broker="kafka://127.0.0.1:9")
    consumer = cls(
        app.transport,
        callback=_nothing,
        on_partitions_revoked=on_revoked,
        on_partitions_assigned=_nothing,
    )
    consumer.assignment = lambda: {TP0}
    return consumer


def _ack(consumer: Any, *offsets: int) -> None:
    """What `Consumer.ack` records for a processed record."""
    for offset in offsets:
        consumer._acked[TP0].append(offset)
        consumer._acked_index[TP0].add(offset)


async def _final_commit_offset(cls: type[Any]) -> int | None:
    """Committed 10; 10 and 11 processed; 12 prefetched and dropped by the revocation (never
    processed); 13 finishes during the revocation's wait. What does the final commit commit?"""
    seen: list[int | None] = []

    async def revocation(revoked: set[TP]) -> None:  # the app: wait for streams, commit
        _ack(consumer, 13)
        seen.append(consumer._new_offset(TP0))

    consumer = _consumer(cls, revocation)
    consumer._committed_offset[TP0] = 10
    if isinstance(consumer, compat.NoSkipConsumer):
        consumer._seeked.add(TP0)
    _ack(consumer, 10, 11)
    await consumer.on_partitions_revoked({TP0})
    return seen[0]


async def test_faust_final_revocation_commit_skips_a_dropped_record() -> None:
    # faust drops the committed offset and the acks first: 14 is committed, 12 is lost.
    assert await _final_commit_offset(faust_aiokafka.Consumer) == 14


async def test_no_skip_final_revocation_commit_stops_at_the_dropped_record() -> None:
    assert await _final_commit_offset(compat.NoSkipConsumer) == 12


async def test_no_skip_forgets_the_revoked_partition_after_the_final_commit() -> None:
    consumer = _consumer(compat.NoSkipConsumer)
    consumer._committed_offset[TP0] = 10
    consumer._read_offset[TP0] = 12
    _ack(consumer, 10)
    await consumer.on_partitions_revoked({TP0})
    assert TP0 not in consumer._committed_offset
    assert TP0 not in consumer._read_offset
    assert TP0 not in consumer._acked


def _state(cls: type[Any], committed: int, acked: list[int]) -> Any:
    consumer = _consumer(cls)
    consumer._committed_offset[TP0] = committed
    if isinstance(consumer, compat.NoSkipConsumer):
        consumer._seeked.add(TP0)
    _ack(consumer, *acked)
    return consumer


def test_faust_head_check_lets_the_record_at_the_committed_offset_be_skipped() -> None:
    assert _state(faust_aiokafka.Consumer, 10, [11])._new_offset(TP0) == 12


@pytest.mark.parametrize(
    ("acked", "expected"),
    [([11], None), ([11, 12], None), ([10, 11], 12), ([10, 12], 11), ([9, 10], 11)],
)
def test_no_skip_head_check_is_strict(acked: list[int], expected: int | None) -> None:
    assert _state(compat.NoSkipConsumer, 10, acked)._new_offset(TP0) == expected


def test_no_skip_commits_nothing_before_the_seek_after_assignment() -> None:
    consumer = _consumer(compat.NoSkipConsumer)
    _ack(consumer, 10, 11)  # a late ack of the previous generation, committed offset unknown
    assert consumer._new_offset(TP0) is None
    assert _consumer(faust_aiokafka.Consumer)._new_offset(TP0) is None  # nothing acked there
    stock = _consumer(faust_aiokafka.Consumer)
    _ack(stock, 10, 11)
    assert stock._new_offset(TP0) == 12  # faust commits it, head unchecked


async def _seek(cls: type[Any]) -> Any:
    consumer = _consumer(cls)

    async def committed() -> dict[TP, int]:
        return {TP0: 10}

    consumer.seek_to_committed = committed
    await consumer.perform_seek()
    return consumer


async def test_faust_seek_sets_the_read_offset_to_the_next_offset() -> None:
    consumer = await _seek(faust_aiokafka.Consumer)
    assert consumer._read_offset[TP0] == 10  # the fetch loop means "last read"
    await consumer._add_gap(TP0, 10, 11)  # a hole at 10: 11 is the first record after it
    assert sorted((i.begin, i.end) for i in consumer._gap[TP0]) == [(11, 12)]  # 10 unrecorded


async def test_no_skip_seek_reads_from_the_committed_offset_and_records_a_hole_there() -> None:
    consumer = await _seek(compat.NoSkipConsumer)
    assert consumer._read_offset[TP0] == 9
    await consumer._add_gap(TP0, 10, 11)
    assert sorted((i.begin, i.end) for i in consumer._gap[TP0]) == [(10, 11)]
    _ack(consumer, 11)  # the hole at 10 counts as done: 11 is committable
    assert consumer._new_offset(TP0) == 12


async def _released_at_the_end_of_a_hole(cls: type[Any]) -> int | None:
    """Read up to 10, committed 11; the fetch loop delivers 13 (11 and 12 are not in the log):
    13 is released unprocessed (skipped in a rebalance), 14 is processed."""
    consumer = _state(cls, 11, [])
    await consumer._add_gap(TP0, 11, 13)  # the drain loop's call for record 13
    _ack(consumer, 14)
    return cast(int | None, consumer._new_offset(TP0))


async def test_faust_hole_includes_the_record_being_delivered() -> None:
    assert await _released_at_the_end_of_a_hole(faust_aiokafka.Consumer) == 15  # past 13


async def test_no_skip_hole_ends_before_the_record_being_delivered() -> None:
    assert await _released_at_the_end_of_a_hole(compat.NoSkipConsumer) == 13


async def test_no_skip_assignment_drops_a_read_offset_recorded_after_the_revocation() -> None:
    consumer = _consumer(compat.NoSkipConsumer)
    consumer._read_offset[TP0] = 42  # the fetch loop, for a record it never delivered
    await consumer.on_partitions_assigned({TP0}, 2)
    assert TP0 not in consumer._read_offset


def test_the_app_uses_the_no_skip_consumer() -> None:
    from streams.app import app

    # TORGHUT_EAGER_DELIVERY and TORGHUT_LEAN_DRAIN (default true) pick its lean subclass
    # (test_eager_delivery.py, test_lean_drain.py)
    assert app.transport.Consumer is compat.LeanNoSkipConsumer
    assert issubclass(app.transport.Consumer, compat.NoSkipConsumer)


def _message(offset: int, generation_id: int) -> Any:
    from faust.types.tuples import Message

    return Message(
        "signals", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation_id
    )


async def test_faust_makes_a_skipped_earlier_generation_record_committable() -> None:
    """faust's stream skips an old-generation record unprocessed and acks it: stock faust then
    commits past it (its re-fetched copy may never be processed before a crash)."""
    consumer = _state(faust_aiokafka.Consumer, 10, [])
    consumer.app.topics.acks_enabled_for = lambda topic: True  # an agent reads it
    consumer.app.consumer_generation_id = 2
    old = _message(10, generation_id=1)
    consumer._unacked_messages.add(old)
    assert consumer.ack(old) is True
    assert consumer._new_offset(TP0) == 11


async def test_no_skip_releases_an_earlier_generation_record_without_committing_it() -> None:
    consumer = _state(compat.NoSkipConsumer, 10, [])
    consumer.app.topics.acks_enabled_for = lambda topic: True  # an agent reads it
    consumer.app.consumer_generation_id = 2
    old = _message(10, generation_id=1)
    consumer._unacked_messages.add(old)
    assert consumer.ack(old) is False
    assert old.acked and old not in consumer._unacked_messages  # a rebalance does not wait for it
    assert consumer._new_offset(TP0) is None
    fresh = _message(10, generation_id=2)  # the re-fetched copy, processed
    consumer._unacked_messages.add(fresh)
    assert consumer.ack(fresh) is True
    assert consumer._new_offset(TP0) == 11


def _consumer_message(offset: int, generation_id: int, *, tracked: bool) -> Any:
    from faust.types.tuples import ConsumerMessage

    message = ConsumerMessage(
        "signals", 0, offset, 0.0, 0, None, b"k", b"v", None, generation_id=generation_id
    )
    message.tracked = tracked
    return message


def test_faust_stream_skips_a_record_when_flow_control_is_off_before_tracking_it() -> None:
    """faust 0.15.3's stream iterator skips a record of the *current* generation while flow
    control is off (a rebalance under way) before it tracks it, and acks it in its `finally`
    (`do_ack or value is skipped_value`): a skipped record is an untracked one."""
    import inspect

    from faust.streams import Stream

    source = inspect.getsource(Stream._py_aiter)
    skip = source.index("not self.app.flow_control.is_active()")
    track = source.index("message.tracked = True")
    assert skip < source.index("value = skipped_value") < track
    assert "if event is not None and (do_ack or value is skipped_value):" in source
    assert _consumer_message(1, 1, tracked=False).use_tracking  # consumer records are tracked


async def test_faust_makes_a_record_skipped_for_flow_control_committable() -> None:
    consumer = _state(faust_aiokafka.Consumer, 10, [])
    consumer.app.topics.acks_enabled_for = lambda topic: True
    consumer.app.consumer_generation_id = 2
    skipped = _consumer_message(10, generation_id=2, tracked=False)
    assert consumer.ack(skipped) is True
    assert consumer._new_offset(TP0) == 11  # committed past a record no agent processed


async def test_no_skip_releases_a_record_skipped_for_flow_control_without_committing_it() -> None:
    consumer = _state(compat.NoSkipConsumer, 10, [])
    consumer.app.topics.acks_enabled_for = lambda topic: True
    consumer.app.consumer_generation_id = 2
    skipped = _consumer_message(10, generation_id=2, tracked=False)
    consumer._unacked_messages.add(skipped)
    assert consumer.ack(skipped) is False
    assert skipped.acked and skipped not in consumer._unacked_messages
    assert consumer._new_offset(TP0) is None
    processed = _consumer_message(10, generation_id=2, tracked=True)  # read again after the seek
    consumer._unacked_messages.add(processed)
    assert consumer.ack(processed) is True
    assert consumer._new_offset(TP0) == 11


# ----------------------------------------------- a batch fetched across a rebalance or seek

CHANGELOG = TP("app-signal-watermarks-changelog", 0)


def _record(tp: TP, offset: int) -> Any:
    from aiokafka.structs import ConsumerRecord

    return ConsumerRecord(
        tp.topic, tp.partition, offset, 0, 0, b"k", b"v", None, 1, 1, ()
    )  # fmt: skip


def _fetching(cls: type[Any], during_fetch: Callable[[Any], Awaitable[None]]) -> Any:
    """A consumer whose fetch (aiokafka's thread) returns signals 12 and 13 and changelog
    record 5, drained at the old positions, while `during_fetch` runs on the event loop."""
    consumer = _consumer(cls)
    consumer.highwater = lambda tp: 20
    consumer._active_partitions = {TP0, CHANGELOG}
    consumer.assignment = lambda: {TP0, CHANGELOG}
    consumer.app.consumer_generation_id = 1
    consumer.app.topics.acks_enabled_for = lambda topic: topic == TP0.topic  # an agent's topic

    async def fetch(active_partitions: Any, timeout: float) -> Any:
        await during_fetch(consumer)
        return {TP0: [_record(TP0, 12), _record(TP0, 13)], CHANGELOG: [_record(CHANGELOG, 5)]}

    async def seek(tp: TP, offset: int) -> None:
        consumer.seeks.append((tp, offset))

    consumer._thread = type("Thread", (), {"getmany": staticmethod(fetch)})()
    consumer.seeks = []
    consumer._seek = seek
    return consumer


async def _rebalanced(consumer: Any) -> None:
    consumer.app.on_rebalance_start()  # aiokafka's thread, as the revocation starts
    consumer.app.rebalancing = False
    consumer.app.consumer_generation_id = 2  # assigned; recovery has resumed the flow


async def _delivered(consumer: Any) -> list[tuple[str, int, int]]:
    return [(m.topic, m.offset, m.generation_id) async for _, m in consumer.getmany(timeout=1.0)]


async def test_faust_delivers_a_batch_fetched_before_a_rebalance_as_the_new_generation() -> None:
    """The stale records pass the stream's generation check: processed before the seek that
    re-reads the records the revocation cleared from the stream buffers."""
    consumer = _fetching(faust_aiokafka.Consumer, _rebalanced)
    delivered = await _delivered(consumer)
    assert ("signals", 12, 2) in delivered and ("signals", 13, 2) in delivered


async def test_no_skip_never_delivers_an_agents_records_fetched_across_a_rebalance() -> None:
    consumer = _fetching(compat.NoSkipConsumer, _rebalanced)
    # the changelog record is recovery's business (it seeks changelogs itself): delivered
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 2)]
    assert consumer.stale_batches == 1
    assert consumer.seeks == []  # not sought yet in this assignment: its seek reads them again


async def test_no_skip_reads_again_from_committed_when_its_seek_already_happened() -> None:
    async def rebalanced_and_sought(consumer: Any) -> None:
        await _rebalanced(consumer)
        consumer._committed_offset[TP0] = 10
        await consumer.perform_seek_done()

    consumer = _fetching(compat.NoSkipConsumer, _rebalanced)

    async def done() -> None:  # what perform_seek leaves: the partition sought
        consumer._seeked.add(TP0)
        consumer._sought({TP0})

    consumer.perform_seek_done = done
    consumer._thread.getmany = staticmethod(_fetch_during(consumer, rebalanced_and_sought))
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 2)]
    assert consumer.seeks == [(TP0, 10)]  # the batch may have been drained after that seek
    assert consumer._read_offset[TP0] == 9


def _fetch_during(consumer: Any, during: Callable[[Any], Awaitable[None]]) -> Any:
    async def fetch(active_partitions: Any, timeout: float) -> Any:
        await during(consumer)
        return {TP0: [_record(TP0, 12), _record(TP0, 13)], CHANGELOG: [_record(CHANGELOG, 5)]}

    return fetch


async def test_no_skip_drops_records_fetched_before_a_seek_of_their_partition() -> None:
    async def seeking(consumer: Any) -> None:
        consumer._committed_offset[TP0] = 10
        consumer._seeked.add(TP0)
        await consumer.seek(TP0, 10)

    consumer = _fetching(compat.NoSkipConsumer, seeking)
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 1)]
    assert consumer.seeks == [(TP0, 10), (TP0, 10)]  # the seek, then the read again


async def test_no_skip_a_seek_of_another_partition_changes_nothing() -> None:
    async def seeking(consumer: Any) -> None:
        await consumer.seek(CHANGELOG, 3)  # recovery seeking a changelog

    consumer = _fetching(compat.NoSkipConsumer, seeking)
    delivered = await _delivered(consumer)
    assert [o for t, o, _ in delivered if t == "signals"] == [12, 13]
    assert consumer.stale_batches == 0


async def test_no_skip_stops_delivering_a_partition_once_it_was_sought_meanwhile() -> None:
    consumer = _fetching(compat.NoSkipConsumer, _nothing)
    delivered: list[tuple[str, int]] = []
    async for _, message in consumer.getmany(timeout=1.0):
        delivered.append((message.topic, message.offset))
        if message.offset == 12:
            await consumer.seek(TP0, 10)  # the recovery's seek while 12 is being delivered
    assert ("signals", 12) in delivered and ("signals", 13) not in delivered  # read again
    assert (CHANGELOG.topic, 5) in delivered


async def test_no_skip_delivers_a_batch_with_no_rebalance_or_seek_meanwhile() -> None:
    consumer = _fetching(compat.NoSkipConsumer, _nothing)
    assert sorted(await _delivered(consumer)) == sorted(
        [("signals", 12, 1), ("signals", 13, 1), (CHANGELOG.topic, 5, 1)]
    )
    assert consumer.stale_batches == 0


async def test_no_skip_read_again_survives_a_partition_revoked_meanwhile() -> None:
    from aiokafka.errors import IllegalStateError

    async def seeking(consumer: Any) -> None:
        consumer._committed_offset[TP0] = 10
        consumer._seeked.add(TP0)
        consumer._sought({TP0})  # sought elsewhere

    consumer = _fetching(compat.NoSkipConsumer, seeking)

    async def revoked_seek(tp: TP, offset: int) -> None:
        raise IllegalStateError(f"No current assignment for partition {tp}")

    consumer._seek = revoked_seek
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 1)]  # and the loop goes on


def test_faust_fetch_loop_reads_the_generation_after_the_fetch() -> None:
    """What makes a stale batch look current: the generation is read after the await."""
    import inspect
    import re

    from faust.transport import consumer as faust_consumer

    source = re.sub(r"\s+", "", inspect.getsource(faust_consumer.Consumer.getmany))
    fetch = source.index("awaitself._wait_next_records(timeout)")
    assert source.index("generation_id=self.app.consumer_generation_id") > fetch
    wait = re.sub(r"\s+", "", inspect.getsource(faust_consumer.Consumer._wait_next_records))
    assert "awaitself._getmany(" in wait
    drain = re.sub(r"\s+", "", inspect.getsource(faust_consumer.Consumer._drain_messages))
    assert "getmany=self.getmany" in drain


async def test_no_skip_reads_again_from_the_start_when_nothing_is_committed_yet() -> None:
    async def seeking(consumer: Any) -> None:
        consumer._seeked.add(TP0)  # sought: no committed offset (a new group)
        await consumer.seek(TP0, 0)

    consumer = _fetching(compat.NoSkipConsumer, seeking)
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 1)]
    assert consumer.seeks == [(TP0, 0), (TP0, 0)]
    assert consumer._read_offset.get(TP0) is None


async def test_no_skip_records_dropped_during_the_assignments_seek_are_read_again_after_it() -> (
    None
):
    """The rebalance scenario's second failure: records drained at the new positions while the
    seek after the assignment was under way were dropped, and nothing read them again."""
    consumer = _fetching(compat.NoSkipConsumer, _rebalanced)
    committed = {TP0: 97}

    async def seek_to_committed() -> dict[TP, int]:
        consumer.seeks.append((TP0, committed[TP0]))  # aiokafka's own seek, in its thread
        assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 2)]  # drained meanwhile
        return committed

    consumer.seek_to_committed = seek_to_committed
    await consumer.perform_seek()
    # the assignment's seek, then the read again once it is done: 97 is read again
    assert consumer.seeks == [(TP0, 97), (TP0, 97)]
    assert consumer._read_offset[TP0] == 96
    assert not consumer._read_again


async def test_no_skip_delivers_nothing_of_a_partition_waiting_to_be_read_again() -> None:
    consumer = _fetching(compat.NoSkipConsumer, _nothing)
    consumer._read_again.add(TP0)  # dropped earlier; its assignment's seek still to come
    assert await _delivered(consumer) == [(CHANGELOG.topic, 5, 1)]
    assert consumer.seeks == []  # not sought yet in this assignment: left to that seek
    consumer._seeked.add(TP0)
    consumer._committed_offset[TP0] = 12
    delivered = await _delivered(consumer)  # the next fetch seeks it, and drops its older records
    assert consumer.seeks == [(TP0, 12)]
    assert [o for t, o, _ in delivered if t == "signals"] == []
    delivered = await _delivered(consumer)  # read from the sought position: delivered
    assert [o for t, o, _ in delivered if t == "signals"] == [12, 13]
    assert consumer.seeks == [(TP0, 12)]  # no loop of seeks
