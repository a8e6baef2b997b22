"""`SignalHandler.handle_batch` (`TORGHUT_SIGNAL_BATCH_MAX`): a batch of signals gets exactly the
outcome each signal gets alone through `handle` (decisions, their order, dead letters, dropped
duplicates and stale signals, watermarks), its decisions are awaited together, and a watermark
advances only once its signal's decisions are acknowledged. The acks of the batch's offsets come
after `handle_batch` returned (`compat.event_batches`, tests/unit/compat/test_event_batches.py).

Real decoder, strategy runtime, pipeline, watermark tracker and dead-letter writer
(tests/unit/signals/harness.py); only the topics are recorders."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import errors as kafka_errors
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import decode_decision, encode_ta_signal_avro
from streams.domain.signal_order import epoch_millis
from tests.unit.signals.harness import LANES, NOW, SIGNALS_TOPIC, Event, Message, Stage
from tests.unit.strategy.fixtures import make_signal


def raw(symbol: str, seq: int) -> bytes:
    """A valid signal the always-buy strategy trades; its event time grows with `seq`."""
    return encode_ta_signal_avro(
        make_signal(symbol, seq, at=NOW - timedelta(seconds=600) + timedelta(seconds=seq))
    )


def position(symbol: str, seq: int) -> tuple[int, int]:
    return (epoch_millis(NOW - timedelta(seconds=600) + timedelta(seconds=seq)), seq)


def events(values: list[bytes]) -> list[Event]:
    return [Event(v, Message(SIGNALS_TOPIC, 0, i, b"k", v)) for i, v in enumerate(values)]


class Refusing:
    """A decisions topic that refuses (as Kafka refuses a record too large) every decision of
    the symbols in `refused`, through the delivery future; `hold` keeps futures pending."""

    def __init__(self, refused: set[str] | None = None, *, hold: bool = False) -> None:
        self.refused = refused or set()
        self.hold = hold
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.pending: list[asyncio.Future[None]] = []

    async def send(self, *, key: bytes | None, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append((key, value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if decode_decision(value).symbol in self.refused:
            future.set_exception(kafka_errors.MessageSizeTooLargeError())
        elif self.hold:
            self.pending.append(future)
        else:
            future.set_result(None)
        return future

    def release(self) -> None:
        for future in self.pending:
            future.set_result(None)
        self.pending.clear()


def stage_with(topic: Refusing | None = None) -> Stage:
    stage = Stage()
    if topic is not None:
        stage.decisions = topic  # type: ignore[assignment]
        stage.handler._decisions = topic  # type: ignore[assignment]
    return stage


def outcome(stage: Stage) -> tuple[Any, ...]:
    decisions = [(key, decode_decision(v).symbol, decode_decision(v).signal_seq)
                 for key, v in stage.decisions.sent]  # fmt: skip
    # A refused decision is known only when the batch's acknowledgements are awaited: its dead
    # letter may come after those of later bad records (the set and each reason are the same).
    letters = sorted((d.source_offset or 0, d.reason) for d in stage.dead_letters())
    return decisions, letters, dict(stage.store), dict(stage.watermarks._seen)


async def test_a_batch_keeps_the_order_of_its_signals_and_their_decisions() -> None:
    stage = stage_with()
    values = [raw("AAPL", 1), raw("MSFT", 1), raw("AAPL", 2), raw("NVDA", 1), raw("MSFT", 2)]
    await stage.handler.handle_batch(events(values))  # type: ignore[arg-type]
    sent = [(d.symbol, d.signal_seq, d.account_label) for d in stage.decisions_out()]
    order = [("AAPL", 1), ("MSFT", 1), ("AAPL", 2), ("NVDA", 1), ("MSFT", 2)]
    assert sent == [(s, q, lane) for s, q in order for lane in LANES]
    assert stage.watermarks.last("AAPL") == position("AAPL", 2)
    assert stage.watermarks.last("MSFT") == position("MSFT", 2)
    assert stage.store["NVDA"] == "{}:{}".format(*position("NVDA", 1))


async def test_a_duplicate_and_a_stale_signal_inside_a_batch_are_dropped() -> None:
    stage = stage_with()
    values = [raw("AAPL", 2), raw("AAPL", 2), raw("AAPL", 1), raw("AAPL", 3)]
    await stage.handler.handle_batch(events(values))  # type: ignore[arg-type]
    assert [d.signal_seq for d in stage.decisions_out()] == [2, 2, 3, 3]  # one per lane
    assert stage.watermarks.last("AAPL") == position("AAPL", 3)
    assert stage.dead_letters() == []


async def test_one_bad_record_is_a_dead_letter_and_the_rest_of_the_batch_trades() -> None:
    stage = stage_with()
    values = [raw("AAPL", 1), b"\x00not a signal", raw("MSFT", 1)]
    await stage.handler.handle_batch(events(values))  # type: ignore[arg-type]
    (letter,) = stage.dead_letters()
    assert letter.source_offset == 1 and letter.value == b"\x00not a signal"
    assert [d.symbol for d in stage.decisions_out()] == ["AAPL", "AAPL", "MSFT", "MSFT"]


async def test_the_watermarks_advance_only_once_the_batch_decisions_are_acknowledged() -> None:
    topic = Refusing(hold=True)
    stage = stage_with(topic)
    values = [raw("AAPL", 1), raw("MSFT", 1)]
    handling = asyncio.create_task(stage.handler.handle_batch(events(values)))  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    # Every decision of the batch is sent before any is awaited: awaited together.
    assert len(topic.sent) == 2 * len(LANES) and len(topic.pending) == 2 * len(LANES)
    assert not handling.done()  # the caller acks the batch only after this returns
    assert stage.store == {} and stage.watermarks._seen == {}
    topic.release()
    await handling
    assert stage.watermarks.last("AAPL") == position("AAPL", 1)
    assert stage.watermarks.last("MSFT") == position("MSFT", 1)


async def test_a_cancelled_batch_advances_no_watermark_of_an_unacknowledged_signal() -> None:
    topic = Refusing(hold=True)
    stage = stage_with(topic)
    handling = asyncio.create_task(
        stage.handler.handle_batch(events([raw("AAPL", 1)]))  # type: ignore[arg-type]
    )
    for _ in range(20):
        await asyncio.sleep(0)
    handling.cancel()  # SIGTERM while the decisions are in flight
    with pytest.raises(asyncio.CancelledError):
        await handling
    assert handling.cancelled()
    assert stage.store == {} and stage.watermarks.last("AAPL") is None


async def test_a_refused_decision_dead_letters_its_signal_alone_and_keeps_its_watermark() -> None:
    topic = Refusing({"MSFT"})
    stage = stage_with(topic)
    values = [raw("AAPL", 1), raw("MSFT", 5), raw("NVDA", 1)]
    await stage.handler.handle_batch(events(values))  # type: ignore[arg-type]
    (letter,) = stage.dead_letters()
    assert letter.reason == "produce_failed:MessageSizeTooLargeError"
    assert letter.source_offset == 1
    assert stage.watermarks.last("MSFT") is None and "MSFT" not in stage.store
    assert stage.watermarks.last("AAPL") == position("AAPL", 1)
    assert stage.watermarks.last("NVDA") == position("NVDA", 1)


async def test_a_symbol_waiting_for_its_acks_is_settled_before_its_next_signal() -> None:
    """MSFT 5's decisions are refused: alone, its duplicate later in the batch is handled again
    (the watermark stayed), not dropped against a position that never became the watermark."""
    topic = Refusing({"MSFT"})
    batched = stage_with(topic)
    values = [raw("MSFT", 5), raw("AAPL", 1), raw("MSFT", 5)]
    await batched.handler.handle_batch(events(values))  # type: ignore[arg-type]
    alone = stage_with(Refusing({"MSFT"}))
    for event in events(values):
        await alone.handler.handle(event)  # type: ignore[arg-type]
    assert [d.source_offset for d in batched.dead_letters()] == [0, 2]
    assert outcome(batched) == outcome(alone)


SYMBOLS = ["AAPL", "MSFT", "NVDA"]
record = st.one_of(
    st.tuples(st.sampled_from(SYMBOLS), st.integers(min_value=1, max_value=6)),
    st.just(("bad", 0)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    records=st.lists(record, max_size=25),
    refused=st.sets(st.sampled_from(SYMBOLS), max_size=1),
    cuts=st.lists(st.integers(min_value=1, max_value=8), max_size=6),
)
def test_any_batching_gives_the_outcome_of_one_signal_at_a_time(
    records: list[tuple[str, int]], refused: set[str], cuts: list[int]
) -> None:
    """Duplicates, stale signals, bad records and refused decisions, cut into arbitrary
    batches: the same decisions in the same order, the same dead letters, the same watermarks
    (in memory and in the table) as the per-signal path."""
    values = [b"\x00bad" if s == "bad" else raw(s, q) for s, q in records]

    async def run() -> tuple[Any, Any]:
        alone = stage_with(Refusing(refused))
        for event in events(values):
            await alone.handler.handle(event)  # type: ignore[arg-type]
        batched = stage_with(Refusing(refused))
        todo = events(values)
        for size in [*cuts, len(todo) or 1]:
            batch, todo = todo[:size], todo[size:]
            if batch:
                await batched.handler.handle_batch(batch)  # type: ignore[arg-type]
        if todo:
            await batched.handler.handle_batch(todo)  # type: ignore[arg-type]
        return outcome(alone), outcome(batched)

    alone, batched = asyncio.run(run())
    assert batched == alone
