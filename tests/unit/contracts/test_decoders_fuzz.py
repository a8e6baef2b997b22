"""Untrusted bytes into every decoder: a DecodeError with a reason, never any other exception."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import (
    DecodeError,
    decode_control,
    decode_dead_letter,
    decode_decision,
    decode_ta_signal,
    decode_trade_update,
)
from streams.dlq import build_dead_letter
from tests.unit.contracts.test_ta_signal_codec import GOLDEN_AVRO, GOLDEN_CONFLUENT

DECODERS: dict[str, Callable[[bytes], Any]] = {
    "ta_signal": decode_ta_signal,
    "decision": decode_decision,
    "trade_update": decode_trade_update,
    "control": decode_control,
    "dead_letter": decode_dead_letter,
}
REASONS = {
    "empty_value",
    "json_invalid",
    "schema_invalid",
    "avro_decode_error",
    "avro_trailing_bytes",
    "decision_hash_mismatch",
    "invalid_number",
    "unknown_schema_id",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=6)
    ),
    max_leaves=20,
)


def assert_dead_letter_reason(decode: Callable[[bytes], Any], raw: bytes) -> None:
    try:
        decode(raw)
    except DecodeError as exc:
        assert exc.reason in REASONS
        letter = build_dead_letter(
            reason=exc.reason, topic="t", partition=0, offset=1, key=None, value=raw, error=exc
        )
        assert letter.reason == exc.reason and letter.value == raw


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_random_bytes(name: str, raw: bytes) -> None:
    assert_dead_letter_reason(DECODERS[name], raw)


@pytest.mark.parametrize("name", sorted(DECODERS))
@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_random_json_documents(name: str, value: Any) -> None:
    assert_dead_letter_reason(DECODERS[name], json.dumps(value).encode())


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_mutated_avro_signals(data: st.DataObject) -> None:
    """Flipped, cut and extended real records: the hard cases for a schemaless reader."""
    base = data.draw(st.sampled_from([GOLDEN_AVRO, GOLDEN_CONFLUENT]))
    index = data.draw(st.integers(min_value=0, max_value=len(base) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    mutated = base[:index] + bytes([byte]) + base[index + 1 :]
    cut = data.draw(st.integers(min_value=0, max_value=len(mutated)))
    tail = data.draw(st.binary(max_size=8))
    assert_dead_letter_reason(decode_ta_signal, mutated[:cut] + tail)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f",  # a string length of ~2**62
        b"\x01",  # negative length
        b"\x00\x00\x00\x00\x07\xff\xff\xff\xff\x0f",  # accepted Confluent id + huge length
    ],
)
def test_hostile_avro_lengths(raw: bytes) -> None:
    with pytest.raises(DecodeError) as caught:
        decode_ta_signal(raw)
    assert caught.value.reason == "avro_decode_error"
