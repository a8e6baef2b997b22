"""Fuzzing the signals stage through `SignalHandler.handle` (real decoder, strategy runtime,
pipeline, watermark tracker): random and mutated bytes and field values end as decisions from a
valid record or as a dead letter with a reason; never an exception, never a decision from an
invalid record, never a watermark in the future."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import decode_ta_signal, encode_ta_signal_avro
from schemas.common import iso_millis
from schemas.ta_signal import TaSignal
from streams.domain.signal_order import decode_position, epoch_millis
from tests.unit.signals.harness import LANES, NOW, Stage

SKEW = timedelta(seconds=300)
REASONS = {
    "empty_value",
    "json_invalid",
    "schema_invalid",
    "avro_decode_error",
    "avro_trailing_bytes",
    "invalid_number",
    "unknown_schema_id",
    "event_time_in_future",
    "replay_headers_invalid",
}
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)
NON_NEGATIVE = {
    "price",
    "close",
    "ema.ema12",
    "ema.ema26",
    "boll.mid",
    "boll.upper",
    "boll.lower",
    "vwap.session",
    "vwap.w5m",
    "imbalance.bid_px",
    "imbalance.ask_px",
    "imbalance.bid_sz",
    "imbalance.ask_sz",
    "vol_realized.w60s",
}
SIGNED = {"macd.macd", "macd.signal", "macd.hist", "imbalance.spread"}
JSON_ONLY = {"price", "close"}
FIELDS = sorted(NON_NEGATIVE | SIGNED | {"rsi14"})


def base(event_ts: datetime) -> dict[str, Any]:
    """A complete signal; the always-buy strategy trades it."""
    return {
        "ingest_ts": event_ts,
        "event_ts": event_ts,
        "symbol": "AAPL",
        "seq": 1,
        "window": {"size": "PT1S"},
        "macd": {"macd": 0.5, "signal": 0.1, "hist": 0.4},
        "ema": {"ema12": 100.2, "ema26": 100.0},
        "rsi14": 55.0,
        "boll": {"mid": 100.0, "upper": 101.0, "lower": 99.0},
        "vwap": {"session": 100.0, "w5m": 100.1},
        "imbalance": {"spread": 0.02, "bid_px": 99.99, "ask_px": 100.01, "bid_sz": 1, "ask_sz": 1},
        "vol_realized": {"w60s": 0.001},
        "price": 100.0,
        "close": 100.0,
    }


def number_ok(field: str, value: float) -> bool:
    """The rule written independently of `TaSignal.number_problems`."""
    if not math.isfinite(value):
        return False
    if field == "rsi14":
        return 0 <= value <= 100
    return field in SIGNED or value >= 0


def assert_valid(sig: TaSignal) -> None:
    """What produced a decision: every number passes `number_ok`, the time is not ahead."""
    data = sig.model_dump(exclude_none=True)
    for field in FIELDS:
        part, _, name = field.rpartition(".")
        value = (data.get(part) or {}).get(name) if part else data.get(name)
        assert value is None or number_ok(field, value), field
    assert sig.event_ts <= NOW + SKEW


def raw_json(data: dict[str, Any]) -> bytes:
    out = {
        **data,
        "event_ts": iso_millis(data["event_ts"]),
        "ingest_ts": iso_millis(data["ingest_ts"]),
    }
    return json.dumps(out).encode()  # NaN and infinities as literals


numbers = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, -0.01, 0.0, 100.0, 100.01]
)
event_times = st.one_of(
    st.integers(min_value=-(10**9), max_value=10**9).map(lambda s: NOW + timedelta(seconds=s)),
    st.integers(min_value=-2, max_value=2).map(lambda s: NOW + SKEW + timedelta(seconds=s)),
    st.just(FAR_FUTURE),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS), numbers, max_size=3),
    event_ts=event_times,
    encoding=st.sampled_from(["json", "avro", "confluent-7", "confluent-other"]),
    other_id=st.integers(min_value=0, max_value=2**32 - 1).filter(lambda i: i != 7),
)
def test_field_values(
    changes: dict[str, float], event_ts: datetime, encoding: str, other_id: int
) -> None:
    data = base(event_ts)
    for path, value in changes.items():
        part, _, name = path.rpartition(".")
        (data[part] if part else data)[name] = value
    if encoding == "json":
        raw = raw_json(data)
    else:
        schema_id = {"avro": None, "confluent-7": 7, "confluent-other": other_id}[encoding]
        raw = encode_ta_signal_avro(TaSignal.model_validate(data), confluent_schema_id=schema_id)
    # The expected outcome, from what was generated (Avro does not carry price/close).
    travels = {f: v for f, v in changes.items() if encoding == "json" or f not in JSON_ONLY}
    if encoding == "confluent-other":
        expected = "unknown_schema_id"
    elif not all(number_ok(f, v) for f, v in travels.items()):
        expected = "invalid_number"
    elif event_ts > NOW + SKEW:
        expected = "event_time_in_future"
    else:
        expected = None

    stage = Stage()
    asyncio.run(stage.feed(raw))

    letters = [letter.reason for letter in stage.dead_letters()]
    decisions = stage.decisions_out()
    if expected is None:
        assert letters == []
        assert sorted(d.account_label for d in decisions) == sorted(LANES)
        assert {d.event_ts for d in decisions} == {event_ts}
    else:
        assert letters == [expected]
        assert decisions == [] and stage.store == {}


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    index = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    mutated = raw[:index] + bytes([byte]) + raw[index + 1 :]
    cut = data.draw(st.integers(min_value=0, max_value=len(mutated)))
    return mutated[:cut] + data.draw(st.binary(max_size=8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_streams_of_random_and_mutated_records(data: st.DataObject) -> None:
    """One stage, many records: each ends as one dead letter with a reason or as a signal; a
    decision only ever comes from a record that is a valid, present-dated signal."""
    stage = Stage()
    count = data.draw(st.integers(min_value=1, max_value=12))
    for i in range(count):
        seconds = data.draw(st.integers(min_value=-600, max_value=900))
        good = base(NOW + timedelta(seconds=seconds)) | {"seq": i}
        kind = data.draw(st.sampled_from(["random", "json", "avro", "confluent", "mutated"]))
        if kind == "random":
            raw = data.draw(st.binary(max_size=200))
        elif kind == "json":
            raw = raw_json(good)
        else:
            schema_id = 7 if kind == "confluent" else None
            raw = encode_ta_signal_avro(TaSignal.model_validate(good), schema_id)
            if kind == "mutated":
                raw = mutate(data, raw)
        letters_before, decisions_before = len(stage.dlq.sent), len(stage.decisions.sent)
        asyncio.run(stage.feed(raw))  # never raises
        new_letters = stage.dead_letters()[letters_before:]
        new_decisions = stage.decisions_out()[decisions_before:]
        assert len(new_letters) <= 1
        assert all(letter.reason in REASONS for letter in new_letters)
        assert not (new_letters and new_decisions)
        if new_decisions:
            assert_valid(decode_ta_signal(raw))
        for decision in new_decisions:
            assert decision.event_ts <= NOW + SKEW
            if kind not in ("mutated", "random"):
                assert decision.event_ts == good["event_ts"]
        for text in stage.store.values():
            position = decode_position(text)
            assert position is not None and position[0] <= epoch_millis(NOW + SKEW)
