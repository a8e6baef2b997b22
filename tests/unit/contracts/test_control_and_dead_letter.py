"""Control commands (compacted kill switches) and dead-letter records."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from schemas.codecs import decode_control, decode_dead_letter, encode_control, encode_dead_letter
from schemas.control import ControlCommand, control_key
from schemas.dead_letter import MAX_ERROR_CHARS, MAX_RAW_BYTES
from streams import dlq
from streams.dlq import build_dead_letter
from streams.domain import secrets

PLANTED = "PLANTED-secret-9f8e7d6c5b4a"


@pytest.fixture
def planted_secret() -> Iterator[str]:
    secrets.register(SecretStr(PLANTED))
    yield PLANTED
    secrets.forget_all()


def command(**changes: object) -> ControlCommand:
    fields: dict[str, object] = {
        "engaged": True,
        "operator": "oncall@example",
        "reason": "broker incident",
        "issued_at": datetime(2026, 1, 5, 15, 0, tzinfo=UTC),
    }
    fields.update(changes)
    return ControlCommand.model_validate(fields)


def test_control_scope_and_compaction_key() -> None:
    one = command(account="alpha")
    every = command()
    assert (one.scope, control_key(one)) == ("alpha", b"kill_switch:alpha")
    assert (every.scope, control_key(every)) == ("*", b"kill_switch:*")
    assert one.applies_to("alpha") and not one.applies_to("beta")
    assert every.applies_to("beta")


def test_control_round_trip_and_release() -> None:
    cmd = command(account="alpha", engaged=False)
    raw = encode_control(cmd)
    assert json.loads(raw)["kind"] == "kill_switch"
    assert decode_control(raw) == cmd
    assert len(cmd.command_id) == 32


@pytest.mark.parametrize(
    "changes",
    [{"account": "*"}, {"account": "Alpha"}, {"operator": ""}, {"reason": ""}, {"kind": "nuke"}],
)
def test_control_rejects_bad_commands(changes: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        command(**changes)


def test_dead_letter_keeps_coordinates_and_raw_bytes() -> None:
    raw = bytes(range(256))
    letter = build_dead_letter(
        reason="avro_decode_error",
        topic="torghut.ta.signals.v1",
        partition=3,
        offset=42,
        key=b"AAPL",
        value=raw,
        error=ValueError("bad"),
    )
    decoded = decode_dead_letter(encode_dead_letter(letter))
    assert decoded == letter
    assert (decoded.source_topic, decoded.source_partition, decoded.source_offset) == (
        "torghut.ta.signals.v1",
        3,
        42,
    )
    assert decoded.key == b"AAPL" and decoded.value == raw and decoded.value_size == 256
    assert decoded.error == "ValueError: bad"
    assert json.loads(encode_dead_letter(letter))["key"] == "QUFQTA=="


def test_dead_letter_caps_value_and_error() -> None:
    letter = build_dead_letter(
        reason="x",
        topic="t",
        partition=None,
        offset=None,
        key=None,
        value=b"v" * (MAX_RAW_BYTES + 10),
        error="e" * 10_000,
    )
    assert letter.value is not None and len(letter.value) == MAX_RAW_BYTES
    assert letter.value_truncated and letter.value_size == MAX_RAW_BYTES + 10
    assert letter.error is not None and len(letter.error) == MAX_ERROR_CHARS


def test_dead_letter_error_text_is_scrubbed(planted_secret: str) -> None:
    letter = build_dead_letter(
        reason="broker_error",
        topic="t",
        partition=0,
        offset=0,
        key=None,
        value=b"{}",
        error=RuntimeError(f"401 for key {planted_secret} at https://u:{planted_secret}@h"),
    )
    assert letter.error is not None and planted_secret not in letter.error
    assert "***" in letter.error
    assert planted_secret not in encode_dead_letter(letter).decode()


def test_scrub_registry(planted_secret: str) -> None:
    secrets.register("postgresql://user:dbpassword-123@127.0.0.1/db", "ab", None, "")
    text = f"x {planted_secret} y dbpassword-123 z ab"
    assert secrets.scrub(text) == "x *** y *** z ab"  # too-short values are not scrubbed
    assert "127.0.0.1" in secrets.scrub("postgresql://user:dbpassword-123@127.0.0.1/db")
    assert secrets.scrub_error(None) is None


class FakeTopic:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((key, value))


def counted(metric: Any, **labels: str) -> float:
    return float(metric.labels(**labels)._value.get())


async def test_send_dead_letter_produces_and_counts() -> None:
    topic = FakeTopic()
    before = counted(dlq.DEAD_LETTERS, reason="json_invalid", topic="unit.src")
    await dlq.DeadLetters(topic, app_id="unit").send(
        reason="json_invalid", topic="unit.src", partition=1, offset=9, key=b"k", value=b"{"
    )
    assert counted(dlq.DEAD_LETTERS, reason="json_invalid", topic="unit.src") == before + 1
    ((key, value),) = topic.sent
    letter = decode_dead_letter(value)
    assert key == b"k" and (letter.source_partition, letter.source_offset) == (1, 9)
    assert letter.app_id == "unit"


async def test_a_failing_dlq_is_counted_never_raised(
    monkeypatch: pytest.MonkeyPatch, planted_secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    failing = FakeTopic(fail=ConnectionError(f"broker down, token {planted_secret}"))
    labels = {"reason": "schema_invalid", "topic": "unit.src"}
    before = counted(dlq.DEAD_LETTER_FAILURES, **labels)
    stops: list[str] = []
    await dlq.DeadLetters(failing, on_undeliverable=stops.append).send(
        reason="schema_invalid", topic="unit.src", partition=0, offset=1, key=None, value=b"x"
    )
    assert counted(dlq.DEAD_LETTER_FAILURES, **labels) == before + 1
    # The app's writer stops the worker here (exit_worker): the record is never acked.
    assert stops == ["dead_letter_undeliverable: schema_invalid from unit.src"]
    assert "dead letter not written" in caplog.text and "***" in caplog.text
    assert planted_secret not in caplog.text
