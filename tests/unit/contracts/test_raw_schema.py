"""`streams.topics.RawBytes`: the signals topic (batches on) decodes a record to the event faust's
`raw` serializer gives it (the bytes as they are, None as None), and encodes as before."""

from __future__ import annotations

import inspect
from typing import Any

import faust
import pytest
from faust.topics import Topic
from faust.types.tuples import Message

from streams.settings import Settings
from streams.topics import RawBytes, declare_topics


def _message(key: bytes | None, value: bytes | None) -> Message:
    return Message("t", 0, 7, 0.0, 0, [("h", b"1")], key, value, None)


@pytest.mark.parametrize(
    ("key", "value"), [(b"AAPL", b"\x00\x01avro"), (None, b"v"), (b"k", None), (None, None)]
)
async def test_raw_bytes_gives_the_event_of_fausts_raw_serializer(
    key: bytes | None, value: bytes | None
) -> None:
    app = faust.App("raw-schema-test", broker="kafka://127.0.0.1:9")
    faust_raw: Any = app.topic(
        "t", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    ours: Any = app.topic("t", schema=RawBytes(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    ))  # fmt: skip
    message = _message(key, value)
    expected = await faust_raw.decode(message, propagate=True)
    got = await ours.decode(message, propagate=True)
    assert (got.key, got.value, got.headers, got.message) == (
        expected.key,
        expected.value,
        expected.headers,
        expected.message,
    )
    assert type(got.key) is type(expected.key) and type(got.value) is type(expected.value)
    assert type(got) is type(expected) is app.conf.Event
    # what faust's topic decode function is built from (its public Schema API)
    assert "self.decode = self.schema.compile(" in inspect.getsource(Topic._compile_decode)


def test_the_signals_topic_uses_raw_bytes_with_batches_on_and_still_encodes_raw() -> None:
    for batch_max, expected in ((500, RawBytes), (0, faust.Schema)):
        app = faust.App(f"raw-schema-topics-{batch_max}", broker="kafka://127.0.0.1:9")
        settings = Settings(TORGHUT_SIGNAL_BATCH_MAX=batch_max)  # type: ignore[call-arg]
        topic: Any = declare_topics(app, settings).signals
        assert type(topic.schema) is expected
        assert (topic.key_type, topic.value_type) == (bytes, bytes)
        assert (topic.key_serializer, topic.value_serializer) == ("raw", "raw")
        assert topic.prepare_key(b"k", None) == (b"k", None)
        assert topic.prepare_value(b"v", None) == (b"v", None)
