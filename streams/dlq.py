"""Dead letters: a record an agent cannot use goes to the DLQ topic, and the agent moves on.

Usage in an agent (values arrive as raw bytes; `dead_letters` comes from the worker context)::

    async for event in stream.events():
        try:
            decision = decode_decision(event.value)
        except DecodeError as exc:
            await dead_letters.event(event, exc.reason, exc)
            continue

The record keeps the reason, the source topic/partition/offset, the key and the raw value (base64
in JSON), and a scrubbed, truncated error text. Every dead letter is counted in
`torghut_dead_letters_total{reason,topic}`. Publishing never raises: when the DLQ itself cannot
be written the failure is logged and counted, and the agent still moves on.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from faust.types import EventT
from prometheus_client import Counter
from pydantic import BaseModel

from schemas.codecs import encode_dead_letter
from schemas.dead_letter import MAX_ERROR_CHARS, MAX_RAW_BYTES, DeadLetter
from streams.domain import secrets

log = logging.getLogger(__name__)

DEAD_LETTERS = Counter(
    "torghut_dead_letters_total",
    "Records sent to the dead-letter topic, by reason and source topic.",
    ["reason", "topic"],
)
DEAD_LETTER_FAILURES = Counter(
    "torghut_dead_letter_publish_failures_total",
    "Dead letters that could not be written to the dead-letter topic.",
    ["reason", "topic"],
)


def build_dead_letter(
    *,
    reason: str,
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    error: str | BaseException | None = None,
    app_id: str | None = None,
) -> DeadLetter:
    """The DLQ record: raw value capped to `MAX_RAW_BYTES`, error scrubbed and truncated."""
    raw = bytes(value) if value is not None else None
    truncated = raw is not None and len(raw) > MAX_RAW_BYTES
    return DeadLetter(
        reason=(reason or "unknown")[:128],
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        key=bytes(key) if key is not None else None,
        value=raw[:MAX_RAW_BYTES] if raw is not None and truncated else raw,
        value_size=len(raw) if raw is not None else None,
        value_truncated=truncated,
        error=secrets.scrub_error(error, MAX_ERROR_CHARS),
        app_id=app_id,
    )


class Sink(Protocol):
    async def send(self, *, key: bytes | None, value: bytes) -> Any: ...


class DeadLetters:
    """The worker's dead-letter writer: one per process, over the app's DLQ topic handle."""

    def __init__(self, topic: Sink, app_id: str | None = None) -> None:
        self._topic = topic
        self._app_id = app_id

    @classmethod
    def for_settings(cls, topic: Sink, settings: BaseModel) -> DeadLetters:
        """The app's writer: the settings' secrets are scrubbed from every error text."""
        secrets.register_model(settings)
        return cls(topic, getattr(settings, "app_id", None))

    async def send(
        self,
        *,
        reason: str,
        topic: str,
        partition: int | None,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        error: str | BaseException | None = None,
    ) -> None:
        """Write one dead letter to the DLQ topic and count it. Never raises."""
        letter = build_dead_letter(
            reason=reason,
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            error=error,
            app_id=self._app_id,
        )
        DEAD_LETTERS.labels(reason=letter.reason, topic=topic).inc()
        log.warning(
            "dead letter: %s from %s[%s]@%s",
            letter.reason,
            topic,
            partition,
            offset,
            extra={
                "dlq_reason": letter.reason,
                "source_topic": topic,
                "source_partition": partition,
                "source_offset": offset,
                "error": letter.error,
            },
        )
        try:
            await self._topic.send(key=letter.key, value=encode_dead_letter(letter))
        except Exception as exc:  # noqa: BLE001 - a broken DLQ must not stop the agent
            DEAD_LETTER_FAILURES.labels(reason=letter.reason, topic=topic).inc()
            log.error(
                "dead letter not written: %s",
                secrets.scrub_error(exc),
                extra={"dlq_reason": letter.reason, "source_topic": topic},
            )

    async def event(
        self, event: EventT[Any], reason: str, error: str | BaseException | None = None
    ) -> None:
        """Dead-letter the faust event being processed (its message's coordinates, raw bytes)."""
        message = event.message
        await self.send(
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
        )
