"""Bounded input at the signals stage: future event times, bad numbers and unknown schema ids are
dead letters with a reason; none reaches the strategies or moves a watermark."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prometheus_client import REGISTRY

from schemas.codecs import encode_ta_signal_avro, encode_ta_signal_json
from schemas.common import iso_millis
from schemas.ta_signal import TaSignal
from streams.domain.replay import REPLAY_ACCOUNTS_HEADER, REPLAY_ID_HEADER
from streams.domain.signal_order import encode_position, epoch_millis
from tests.unit.signals.harness import LANES, NOW, SIGNALS_TOPIC, Event, Message, Stage
from tests.unit.strategy.fixtures import make_signal

FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


def raw_json(sig: TaSignal) -> bytes:
    """JSON as a producer writes it, NaN and infinities as literals (pydantic would write null)."""
    data = sig.model_dump(exclude_none=True)
    data["event_ts"], data["ingest_ts"] = iso_millis(sig.event_ts), iso_millis(sig.ingest_ts)
    return json.dumps(data).encode()


ENCODINGS = {"json": raw_json, "avro": encode_ta_signal_avro}


def counted(reason: str) -> float:
    labels = {"reason": reason, "topic": SIGNALS_TOPIC}
    return REGISTRY.get_sample_value("torghut_dead_letters_total", labels) or 0.0


def current(seq: int, **kw: Any) -> TaSignal:
    return make_signal("AAPL", seq, at=NOW - timedelta(seconds=60 - seq), **kw)


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
async def test_a_signal_dated_9999_is_a_dead_letter_and_the_symbol_keeps_trading(
    encoding: str,
) -> None:
    encode = ENCODINGS[encoding]
    stage = Stage()
    await stage.feed(encode(current(1)))
    assert len(stage.decisions_out()) == len(LANES)
    mark = dict(stage.store)
    before = counted("event_time_in_future")

    await stage.feed(encode(make_signal("AAPL", 2, at=FAR_FUTURE)))

    (letter,) = stage.dead_letters()
    assert letter.reason == "event_time_in_future"
    assert letter.error is not None and "ahead of the worker clock" in letter.error
    assert letter.source_topic == SIGNALS_TOPIC and letter.value is not None
    assert counted("event_time_in_future") == before + 1
    assert len(stage.decisions_out()) == len(LANES)  # no decision from it
    assert stage.store == mark  # the watermark did not move
    assert stage.watermarks.last("AAPL") == (epoch_millis(current(1).event_ts), 1)

    # a current signal of the same symbol afterwards still trades
    await stage.feed(encode(current(3)))
    decisions = stage.decisions_out()
    assert len(decisions) == 2 * len(LANES)
    assert {d.event_ts for d in decisions[len(LANES) :]} == {current(3).event_ts}


async def test_the_skew_is_a_bound_not_a_ban_on_clock_drift() -> None:
    stage = Stage(max_skew_seconds=300)
    await stage.feed(encode_ta_signal_json(make_signal("AAPL", 1, at=NOW + timedelta(seconds=299))))
    await stage.feed(encode_ta_signal_json(make_signal("MSFT", 1, at=NOW + timedelta(seconds=301))))
    assert {d.symbol for d in stage.decisions_out()} == {"AAPL"}
    assert [letter.reason for letter in stage.dead_letters()] == ["event_time_in_future"]
    assert "MSFT" not in stage.store


async def test_a_future_dated_replay_is_refused_too() -> None:
    stage = Stage()
    headers = {REPLAY_ID_HEADER: b"r1", REPLAY_ACCOUNTS_HEADER: b"p-a"}
    value = encode_ta_signal_json(make_signal("AAPL", 1, at=FAR_FUTURE))
    event = Event(value, Message(SIGNALS_TOPIC, 0, 1, b"AAPL", value), headers)
    await stage.handler.handle(event)  # type: ignore[arg-type]
    assert [letter.reason for letter in stage.dead_letters()] == ["event_time_in_future"]
    assert stage.decisions_out() == []


async def test_a_watermark_poisoned_before_the_fix_is_ignored_and_overwritten() -> None:
    poisoned = encode_position((epoch_millis(FAR_FUTURE), 5))
    stage = Stage(store={"AAPL": poisoned})
    assert stage.watermarks.last("AAPL") is None
    await stage.feed(encode_ta_signal_json(current(1)))
    assert len(stage.decisions_out()) == len(LANES)
    assert stage.store["AAPL"] == encode_position((epoch_millis(current(1).event_ts), 1))


def test_the_tracker_never_records_a_future_position() -> None:
    stage = Stage()
    stage.watermarks.advance(make_signal("AAPL", 1, at=FAR_FUTURE), produced_decisions=True)
    assert stage.store == {} and stage.watermarks.last("AAPL") is None


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rsi": float("nan")}, "rsi14"),
        ({"rsi": 140.0}, "rsi14"),
        ({"vwap": float("inf")}, "vwap.session"),
        ({"vwap": -1.0}, "vwap.session"),
        ({"ema": (float("-inf"), 100.0)}, "ema.ema12"),
        ({"spread": 0.02, "price": -5.0}, "imbalance.bid_px"),
    ],
)
async def test_bad_numbers_are_dead_letters_naming_the_field(
    encoding: str, change: dict[str, object], field: str
) -> None:
    stage = Stage()
    before = counted("invalid_number")
    await stage.feed(ENCODINGS[encoding](current(1, **change)))
    (letter,) = stage.dead_letters()
    assert letter.reason == "invalid_number"
    assert letter.error is not None and field in letter.error
    assert counted("invalid_number") == before + 1
    assert stage.decisions_out() == [] and stage.store == {}


async def test_json_nan_and_infinity_literals_are_dead_letters() -> None:
    stage = Stage()
    text = encode_ta_signal_json(current(1, rsi=55.0, price=None)).decode()
    text = text.replace('"rsi14":55.0', '"rsi14":NaN')
    text = text[:-1] + ',"price":-Infinity,"close":"Infinity"}'
    await stage.feed(text.encode())
    (letter,) = stage.dead_letters()
    assert letter.reason == "invalid_number" and letter.error is not None
    assert all(f in letter.error for f in ("rsi14", "price", "close"))


async def test_an_unknown_schema_id_is_a_dead_letter_not_a_signal() -> None:
    stage = Stage()
    before = counted("unknown_schema_id")
    await stage.feed(encode_ta_signal_avro(current(1), confluent_schema_id=999999))
    (letter,) = stage.dead_letters()
    assert letter.reason == "unknown_schema_id"
    assert letter.error is not None and "999999" in letter.error
    assert counted("unknown_schema_id") == before + 1
    assert stage.decisions_out() == [] and stage.store == {}
    await stage.feed(encode_ta_signal_avro(current(2), confluent_schema_id=7))  # the accepted id
    assert len(stage.decisions_out()) == len(LANES)
