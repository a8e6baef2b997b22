"""TA signal: golden bytes of both Avro wire formats and JSON decode to the same model."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import fastavro
import pytest
from hypothesis import given, settings

from schemas.codecs import (
    AVSC_PATH,
    DecodeError,
    confluent_schema_id,
    decode_ta_signal,
    encode_ta_signal_avro,
    encode_ta_signal_json,
)
from schemas.ta_signal import TaSignal, timeframe_from_window
from tests.unit.contracts.strategies import ta_signals

# An NVDA signal with every optional part set, as the Flink job writes it (bare Avro binary).
# Hand-checked: 0x30 = zigzag 24 = len("2025-12-03T18:32:10.123Z"); 0x08 = len("NVDA");
# 0x54 = zigzag 42 (seq); 0x02 0x01 = union branch 1 (boolean) true; ...; 0x00 0x02 = version 1.
GOLDEN_AVRO = bytes.fromhex(
    "30323032352d31322d30335431383a33323a31302e3132335a30323032352d31322d30335431383a33323a31302e"
    "3034355a084e564441540201020a666c696e6b0208505431530208505431530228323032352d31322d30335431383a"
    "33323a31305a0228323032352d31322d30335431383a33323a31315a02e17a14ae47e1da3f666666666666d63fec51"
    "b81e85ebb13f029a99999999817e4033333333337f7e40029a99999999994e40020000000000807e403333333333"
    "937e40cdcccccccc6c7e400252b81e85eb817e40023333333333837e40027b14ae47e17aa43f9a99999999817e40"
    "0ad7a3703d827e400000000000c07240000000000000694002613255302aa9533f0002"
)
GOLDEN_SCHEMA_ID = 7
GOLDEN_CONFLUENT = b"\x00\x00\x00\x00\x07" + GOLDEN_AVRO
GOLDEN_JSON = (
    b'{"ingest_ts":"2025-12-03T18:32:10.123Z","event_ts":"2025-12-03T18:32:10.045Z",'
    b'"symbol":"NVDA","seq":42,"is_final":true,"source":"flink","window":{"size":"PT1S",'
    b'"step":"PT1S","start":"2025-12-03T18:32:10Z","end":"2025-12-03T18:32:11Z"},'
    b'"macd":{"macd":0.42,"signal":0.35,"hist":0.07},"ema":{"ema12":488.1,"ema26":487.95},'
    b'"rsi14":61.2,"boll":{"mid":488.0,"upper":489.2,"lower":486.8},'
    b'"vwap":{"session":488.12,"w5m":488.2},"imbalance":{"spread":0.04,"bid_px":488.1,'
    b'"ask_px":488.14,"bid_sz":300.0,"ask_sz":200.0},"vol_realized":{"w60s":0.0012},"version":1}'
)


def golden_signal() -> TaSignal:
    return TaSignal.model_validate(json.loads(GOLDEN_JSON))


def test_golden_bytes_of_all_three_formats_decode_to_the_same_model() -> None:
    expected = golden_signal()
    assert decode_ta_signal(GOLDEN_AVRO) == expected
    assert decode_ta_signal(GOLDEN_CONFLUENT) == expected
    assert decode_ta_signal(GOLDEN_JSON) == expected
    assert expected.event_ts == datetime(2025, 12, 3, 18, 32, 10, 45000, tzinfo=UTC)
    assert expected.imbalance is not None and expected.imbalance.bid_sz == 300.0


def test_encoders_reproduce_the_golden_bytes() -> None:
    sig = golden_signal()
    assert encode_ta_signal_avro(sig) == GOLDEN_AVRO
    assert encode_ta_signal_avro(sig, confluent_schema_id=GOLDEN_SCHEMA_ID) == GOLDEN_CONFLUENT
    assert encode_ta_signal_json(sig) == GOLDEN_JSON
    assert confluent_schema_id(GOLDEN_CONFLUENT) == GOLDEN_SCHEMA_ID
    assert confluent_schema_id(GOLDEN_AVRO) is None


def test_a_minimal_record_written_by_another_avro_writer_decodes() -> None:
    """What the Flink job writes with only the required fields (and a null version)."""
    schema = fastavro.parse_schema(json.loads(AVSC_PATH.read_text()))
    record = {
        "ingest_ts": "2025-12-03T18:32:10.123Z",
        "event_ts": "2025-12-03T18:32:10Z",
        "symbol": "BTC/USD",
        "seq": 7,
        "version": None,
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, record)
    sig = decode_ta_signal(out.getvalue())
    assert (sig.symbol, sig.seq, sig.version, sig.macd, sig.window) == ("BTC/USD", 7, 1, None, None)
    assert sig.timeframe == "1Sec"
    assert sig.is_crypto


def test_json_with_leading_whitespace_and_extra_fields_decodes() -> None:
    raw = b'  \n{"ingest_ts":"2025-01-01T00:00:00Z","event_ts":"2025-01-01T00:00:00Z",'
    raw += b'"symbol":"AAPL","seq":1,"close":187.5,"unknown":{"x":1}}'
    sig = decode_ta_signal(raw)
    assert sig.sizing_price == 187.5


@settings(max_examples=200, deadline=None)
@given(sig=ta_signals)
def test_round_trips_in_every_format(sig: TaSignal) -> None:
    assert decode_ta_signal(encode_ta_signal_avro(sig)) == sig
    assert decode_ta_signal(encode_ta_signal_avro(sig, confluent_schema_id=GOLDEN_SCHEMA_ID)) == sig
    assert decode_ta_signal(encode_ta_signal_json(sig)) == sig


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty_value"),
        (None, "empty_value"),
        (b"\x00\x00\x00", "avro_decode_error"),
        (b"\x00\x00\x00\x00\x07", "avro_decode_error"),
        (GOLDEN_AVRO[:40], "avro_decode_error"),
        (GOLDEN_AVRO + b"\x00", "avro_trailing_bytes"),
        (b'{"symbol": "AAPL"', "json_invalid"),
        (b'{"symbol": "AAPL", "seq": 1}', "schema_invalid"),
        (GOLDEN_JSON.replace(b'"seq":42', b'"seq":-1'), "schema_invalid"),
    ],
)
def test_bad_records_give_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_ta_signal(raw)
    assert caught.value.reason == reason


def test_schema_error_names_the_field_not_the_value() -> None:
    raw = GOLDEN_JSON.replace(
        b'"symbol":"NVDA"', b'"symbol":"SECRETVALUE-1234567890-TOOLONGFORASYMBOL"'
    )
    with pytest.raises(DecodeError) as caught:
        decode_ta_signal(raw)
    assert "symbol" in str(caught.value)
    assert "SECRETVALUE" not in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "price"),
    [
        ({"price": 10.0, "close": 11.0, "vwap": {"session": 12.0}}, 10.0),
        ({"close": 11.0, "vwap": {"session": 12.0}}, 11.0),
        ({"vwap": {"session": 12.0, "w5m": 13.0}}, 12.0),
        ({"vwap": {"session": 0.0, "w5m": 13.0}}, 13.0),
        (
            {"imbalance": {"spread": 1, "bid_px": 9, "ask_px": 11, "bid_sz": 1, "ask_sz": 1}},
            10.0,
        ),
        ({}, None),
    ],
)
def test_sizing_price_order(fields: dict[str, object], price: float | None) -> None:
    base = {"ingest_ts": "2025-01-01T00:00:00Z", "event_ts": "2025-01-01T00:00:00Z"}
    sig = TaSignal.model_validate({**base, "symbol": "AAPL", "seq": 1, **fields})
    assert sig.sizing_price == price


@pytest.mark.parametrize(
    ("size", "timeframe"),
    [("PT1S", "1Sec"), ("PT5S", "5Sec"), ("PT1M", "1Min"), ("PT15M", "15Min"), ("PT1H", "1Hour")],
)
def test_timeframe_from_window(size: str, timeframe: str) -> None:
    assert timeframe_from_window(size) == timeframe
