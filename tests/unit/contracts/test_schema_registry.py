"""Confluent schema ids: accepted ids read as our schema, other ids resolved through a real (local,
HTTP) schema registry, fetched once; unknown ids and a down registry are dead-letter reasons."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import fastavro
import pytest

from schemas.codecs import (
    AVSC_PATH,
    CONFLUENT_HEADER,
    CONFLUENT_MAGIC,
    DecodeError,
    encode_ta_signal_avro,
)
from streams.signal_decoder import SchemaRegistry, SignalDecoder
from tests.support.schema_registry import FakeSchemaRegistry, register
from tests.unit.contracts.test_ta_signal_codec import golden_signal

SUBJECT = "torghut.ta.signals.v1-value"


def older_writer_schema() -> dict[str, Any]:
    """An older producer's TaSignal: no `vol_realized`, no `version`, and an extra `venue`."""
    schema: dict[str, Any] = json.loads(AVSC_PATH.read_text())
    fields = [f for f in schema["fields"] if f["name"] not in ("vol_realized", "version")]
    fields.insert(4, {"name": "venue", "type": "string"})
    schema["fields"] = fields
    return schema


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(CONFLUENT_HEADER.pack(CONFLUENT_MAGIC, schema_id))
    fastavro.schemaless_writer(out, fastavro.parse_schema(copy.deepcopy(schema)), record)
    return out.getvalue()


def old_record(**changes: Any) -> dict[str, Any]:
    sig = golden_signal()
    record: dict[str, Any] = json.loads(sig.model_dump_json(exclude={"price", "close"}))
    record.pop("vol_realized")
    record.pop("version")
    record["venue"] = "XNAS"
    record.update(changes)
    return record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def registry() -> AsyncIterator[FakeSchemaRegistry]:
    server = await FakeSchemaRegistry().start()
    yield server
    await server.stop()


async def decoder_for(url: str, clock: Clock | None = None) -> SignalDecoder:
    client = SchemaRegistry(url, backoff=0.01, monotonic=clock or Clock())
    return SignalDecoder({7}, client)


async def test_an_older_writer_schema_is_fetched_once_and_resolved(
    registry: FakeSchemaRegistry,
) -> None:
    schema_id = await register(registry.url, SUBJECT, older_writer_schema())
    decoder = await decoder_for(registry.url)
    try:
        first = await decoder.decode(framed(schema_id, older_writer_schema(), old_record()))
        second = await decoder.decode(
            framed(schema_id, older_writer_schema(), old_record(seq=43, symbol="MSFT"))
        )
    finally:
        await decoder.close()
    expected = golden_signal().model_copy(update={"vol_realized": None})
    assert first == expected  # the missing field takes the reader's default, the extra is skipped
    assert (second.symbol, second.seq, second.version) == ("MSFT", 43, 1)
    assert registry.gets == 1  # cached after the first fetch


async def test_a_resolved_record_obeys_the_same_numeric_rule(registry: FakeSchemaRegistry) -> None:
    schema_id = await register(registry.url, SUBJECT, older_writer_schema())
    decoder = await decoder_for(registry.url)
    bad = old_record(vwap={"session": float("nan"), "w5m": None})
    try:
        with pytest.raises(DecodeError) as caught:
            await decoder.decode(framed(schema_id, older_writer_schema(), bad))
    finally:
        await decoder.close()
    assert caught.value.reason == "invalid_number" and "vwap.session" in str(caught.value)


async def test_accepted_ids_never_ask_the_registry(registry: FakeSchemaRegistry) -> None:
    decoder = await decoder_for(registry.url)
    try:
        sig = await decoder.decode(encode_ta_signal_avro(golden_signal(), confluent_schema_id=7))
    finally:
        await decoder.close()
    assert sig == golden_signal() and registry.gets == 0


async def test_an_id_the_registry_does_not_know_is_unknown_and_remembered(
    registry: FakeSchemaRegistry,
) -> None:
    decoder = await decoder_for(registry.url)
    raw = encode_ta_signal_avro(golden_signal(), confluent_schema_id=999999)
    try:
        for _ in range(3):
            with pytest.raises(DecodeError) as caught:
                await decoder.decode(raw)
            assert caught.value.reason == "unknown_schema_id"
    finally:
        await decoder.close()
    assert registry.gets == 1  # a stream of bad ids is not a stream of requests


async def test_without_a_registry_another_id_is_unknown() -> None:
    decoder = SignalDecoder({7})
    with pytest.raises(DecodeError) as caught:
        await decoder.decode(encode_ta_signal_avro(golden_signal(), confluent_schema_id=999999))
    assert caught.value.reason == "unknown_schema_id"
    assert "999999" in str(caught.value)


async def test_an_incompatible_writer_schema_is_refused(registry: FakeSchemaRegistry) -> None:
    schema = older_writer_schema()
    for field in schema["fields"]:
        if field["name"] == "symbol":
            field["type"] = "long"  # not promotable to string
    schema_id = await register(registry.url, SUBJECT, schema)
    decoder = await decoder_for(registry.url)
    try:
        with pytest.raises(DecodeError) as caught:
            await decoder.decode(framed(schema_id, schema, old_record(symbol=12)))
    finally:
        await decoder.close()
    assert caught.value.reason == "schema_incompatible"


async def test_a_failing_registry_is_retried_within_bounds_then_cools_down(
    registry: FakeSchemaRegistry,
) -> None:
    schema_id = await register(registry.url, SUBJECT, older_writer_schema())
    raw = framed(schema_id, older_writer_schema(), old_record())
    clock = Clock()
    decoder = await decoder_for(registry.url, clock)
    registry.failing = True
    try:
        with pytest.raises(DecodeError) as caught:
            await decoder.decode(raw)
        assert caught.value.reason == "schema_registry_unavailable"
        assert registry.gets == 3  # bounded retry
        with pytest.raises(DecodeError) as caught:
            await decoder.decode(raw)
        assert caught.value.reason == "schema_registry_unavailable"
        assert registry.gets == 3  # cooling down: no request per record
        registry.failing = False
        clock.now += 10
        assert (await decoder.decode(raw)).symbol == "NVDA"  # back: fetched and cached
        assert registry.gets == 4
    finally:
        await decoder.close()


async def test_an_unreachable_registry_is_unavailable_not_unknown() -> None:
    server = await FakeSchemaRegistry().start()
    url = server.url
    await server.stop()  # nothing listens there any more
    decoder = await decoder_for(url)
    try:
        with pytest.raises(DecodeError) as caught:
            await decoder.decode(encode_ta_signal_avro(golden_signal(), confluent_schema_id=5))
    finally:
        await decoder.close()
    assert caught.value.reason == "schema_registry_unavailable"
