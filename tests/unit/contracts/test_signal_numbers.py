"""One numeric rule for TA signals, the same on every decode path (JSON, the compiled Avro reader,
fastavro with schema resolution): NaN, infinities, negative prices/sizes/volatility and RSI
outside 0..100 are `invalid_number`, naming every bad field."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest

from schemas.codecs import (
    DecodeError,
    decode_ta_signal,
    decode_ta_signal_with_writer,
    encode_ta_signal_avro,
    ta_signal_schema,
)
from schemas.common import iso_millis
from schemas.ta_signal import TaSignal
from tests.unit.contracts.test_ta_signal_codec import golden_signal

BAD = (math.nan, math.inf, -math.inf)


def raw_json(sig: TaSignal) -> bytes:
    data = sig.model_dump(exclude_none=True)
    data["event_ts"], data["ingest_ts"] = iso_millis(sig.event_ts), iso_millis(sig.ingest_ts)
    return json.dumps(data).encode()  # NaN and infinities as JSON literals


DECODERS: dict[str, Callable[[TaSignal], TaSignal]] = {
    "json": lambda sig: decode_ta_signal(raw_json(sig)),
    "avro_compiled": lambda sig: decode_ta_signal(encode_ta_signal_avro(sig)),
    "avro_confluent": lambda sig: decode_ta_signal(encode_ta_signal_avro(sig, 7)),
    "avro_fastavro": lambda sig: decode_ta_signal_with_writer(
        encode_ta_signal_avro(sig), ta_signal_schema()
    ),
}


def with_value(path: str, value: float) -> TaSignal:
    """The golden signal with one numeric field replaced (the model itself accepts anything)."""
    data: dict[str, Any] = golden_signal().model_dump()
    part, _, name = path.rpartition(".")
    (data[part] if part else data)[name] = value
    return TaSignal.model_validate(data)


EVERY_NUMBER = [
    "rsi14",
    *(f"macd.{n}" for n in ("macd", "signal", "hist")),
    *(f"ema.{n}" for n in ("ema12", "ema26")),
    *(f"boll.{n}" for n in ("mid", "upper", "lower")),
    *(f"vwap.{n}" for n in ("session", "w5m")),
    *(f"imbalance.{n}" for n in ("spread", "bid_px", "ask_px", "bid_sz", "ask_sz")),
    "vol_realized.w60s",
]
NON_NEGATIVE = [
    n for n in EVERY_NUMBER if not n.startswith("macd.") and n not in ("rsi14", "imbalance.spread")
]


def assert_invalid(decode: Callable[[TaSignal], TaSignal], sig: TaSignal, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(sig)
    assert caught.value.reason == "invalid_number"
    assert f"{field}:" in str(caught.value)


@pytest.mark.parametrize("path", sorted(DECODERS))
@pytest.mark.parametrize("field", EVERY_NUMBER)
def test_non_finite_numbers_are_invalid_on_every_path(path: str, field: str) -> None:
    for bad in BAD:
        assert_invalid(DECODERS[path], with_value(field, bad), field)


@pytest.mark.parametrize("path", sorted(DECODERS))
@pytest.mark.parametrize("field", NON_NEGATIVE)
def test_negative_prices_sizes_and_volatility_are_invalid(path: str, field: str) -> None:
    assert_invalid(DECODERS[path], with_value(field, -0.01), field)


@pytest.mark.parametrize("path", sorted(DECODERS))
@pytest.mark.parametrize("rsi", [-0.1, 100.5])
def test_rsi_outside_its_range_is_invalid(path: str, rsi: float) -> None:
    assert_invalid(DECODERS[path], with_value("rsi14", rsi), "rsi14")


@pytest.mark.parametrize("path", sorted(DECODERS))
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rsi14", 0.0),
        ("rsi14", 100.0),
        ("macd.hist", -3.5),  # MACD lines are signed
        ("imbalance.spread", -0.01),  # a crossed book
        ("vwap.session", 0.0),  # zero is "no price" for sizing, not garbage
    ],
)
def test_meaningful_edge_values_pass(path: str, field: str, value: float) -> None:
    assert DECODERS[path](with_value(field, value)) == with_value(field, value)


def test_json_only_price_fields_and_every_problem_are_named() -> None:
    raw = raw_json(golden_signal())[:-1] + b',"price":-1.0,"close":NaN}'
    raw = raw.replace(b'"rsi14": 61.2', b'"rsi14": Infinity')
    with pytest.raises(DecodeError) as caught:
        decode_ta_signal(raw)
    message = str(caught.value)
    assert caught.value.reason == "invalid_number"
    assert "price: negative" in message and "close:" in message and "rsi14:" in message
    assert "-1.0" not in message  # fields and problems, never values
