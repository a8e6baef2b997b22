"""The compiled Avro reader decodes what fastavro decodes (it replaced it on the hot path)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.avro_reader import UnsupportedSchema, compile_reader
from schemas.codecs import AVSC_PATH, encode_ta_signal_avro, ta_signal_reader, ta_signal_schema
from schemas.ta_signal import TaSignal
from tests.unit.contracts.strategies import ta_signals
from tests.unit.contracts.test_ta_signal_codec import GOLDEN_AVRO

SCHEMA = json.loads(AVSC_PATH.read_text())


def fastavro_read(body: bytes, schema: Any = None) -> tuple[Any, int]:
    stream = io.BytesIO(body)
    parsed = ta_signal_schema() if schema is None else fastavro.parse_schema(schema)
    return fastavro.schemaless_reader(stream, parsed, None), stream.tell()


def test_the_signal_schema_compiles() -> None:
    assert ta_signal_reader() is not None
    assert ta_signal_reader()(GOLDEN_AVRO) == fastavro_read(GOLDEN_AVRO)


@settings(max_examples=300, deadline=None)
@given(sig=ta_signals)
def test_same_record_and_length_as_fastavro(sig: TaSignal) -> None:
    body = encode_ta_signal_avro(sig)
    assert compile_reader(SCHEMA)(body) == fastavro_read(body)


@settings(max_examples=500, deadline=None)
@given(cut=st.integers(min_value=0, max_value=len(GOLDEN_AVRO) - 1), noise=st.binary(max_size=40))
def test_damaged_bytes_fail_or_decode_as_fastavro_does(cut: int, noise: bytes) -> None:
    body = GOLDEN_AVRO[:cut] + noise
    try:
        ours = compile_reader(SCHEMA)(body)
    except Exception:  # any failure becomes a dead letter (codecs._read_avro)
        return
    assert ours == fastavro_read(body)


def test_other_primitives_and_named_references() -> None:
    schema = {
        "type": "record",
        "name": "Outer",
        "namespace": "t",
        "fields": [
            {"name": "f", "type": "float"},
            {"name": "b", "type": "bytes"},
            {"name": "flag", "type": "boolean"},
            {"name": "inner", "type": {"type": "record", "name": "In", "fields": [
                {"name": "n", "type": "int"}, {"name": "s", "type": ["null", "string", "long"]}
            ]}},
            {"name": "again", "type": ["null", "In"]},
        ],
    }  # fmt: skip
    record = {
        "f": 1.5,
        "b": b"\x00\xff" * 70,  # a length that takes two varint bytes
        "flag": True,
        "inner": {"n": -300, "s": 2**40},
        "again": {"n": 0, "s": "x" * 100},
    }
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    body = out.getvalue()
    assert compile_reader(schema)(body) == fastavro_read(body, schema) == (record, len(body))


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "enum", "name": "E", "symbols": ["A"]},
        {"type": "array", "items": "long"},
        {"type": "string", "logicalType": "uuid"},
        "Unknown",
    ],
)
def test_unsupported_schemas_are_refused_at_compile_time(schema: Any) -> None:
    with pytest.raises(UnsupportedSchema):
        compile_reader(schema)


def test_a_bad_union_index_is_an_error() -> None:
    # is_final is ["null", "boolean"]: index 2 (zigzag 4) does not exist.
    body = bytearray(GOLDEN_AVRO)
    head = compile_reader({"type": "record", "name": "H", "fields": SCHEMA["fields"][:4]})
    _, at = head(bytes(body))
    body[at] = 4
    with pytest.raises(ValueError, match="union index"):
        compile_reader(SCHEMA)(bytes(body))
