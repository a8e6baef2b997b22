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
`torghut_dead_letters_total{reason,topic}`. A dead letter is awaited until Kafka acknowledged it
(bounded retries). When it cannot be delivered either, the app's writer stops the worker
(`streams.errors.exit_worker`) before the agent acks the record: it comes back after the restart
instead of being lost. `produce` is the guarded send of the agents' own output records.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from faust.types import EventT
from prometheus_client import Counter
from pydantic import BaseModel

from schemas.codecs import encode_dead_letter
from schemas.dead_letter import MAX_ERROR_CHARS, MAX_RAW_BYTES, DeadLetter
from streams.domain import secrets
from streams.errors import exit_worker, is_poison, reason_code, retry

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


DELIVERY_TIMEOUT_SECONDS = 30.0  # one produce attempt, until Kafka acknowledged the record


async def delivered(send: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """`send()` and, when it hands back a delivery future (faust's FutureMessage), its ack."""
    result = await send()
    if inspect.isawaitable(result):
        return await asyncio.wait_for(asyncio.shield(result), timeout)
    return result


def _log_only(reason: str) -> None:
    log.error("worker would stop: %s", reason)


class DeadLetters:
    """The worker's dead-letter writer: one per process, over the app's DLQ topic handle."""

    def __init__(
        self,
        topic: Sink,
        app_id: str | None = None,
        *,
        on_undeliverable: Callable[[str], None] = _log_only,
        delivery_timeout: float = DELIVERY_TIMEOUT_SECONDS,
    ) -> None:
        self._topic = topic
        self._app_id = app_id
        self._on_undeliverable = on_undeliverable
        self._delivery_timeout = delivery_timeout

    @classmethod
    def for_settings(cls, topic: Sink, settings: BaseModel) -> DeadLetters:
        """The app's writer: the settings' secrets are scrubbed from every error text, and a
        dead letter that cannot be delivered stops the worker (the record is not acked)."""
        secrets.register_model(settings)
        return cls(topic, getattr(settings, "app_id", None), on_undeliverable=exit_worker)

    async def produce(
        self, event: EventT[Any], send: Callable[[], Awaitable[Any]], what: str
    ) -> bool:
        """A guarded send of an agent's output for `event`, awaited to delivery with bounded
        retries. A record Kafka refuses for itself (too large) is dead-lettered with the reason
        (False); any other failure stops the worker before `event` is acked."""
        try:
            await retry(lambda: delivered(send, self._delivery_timeout), what, attempts=3)
        except Exception as exc:
            if is_poison(exc):
                await self.event(event, f"produce_failed:{reason_code(exc)}", exc)
                return False
            self._on_undeliverable(f"produce_failed: {what}: {type(exc).__name__}")
            raise
        return True

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
        encoded = encode_dead_letter(letter)
        try:
            await retry(
                lambda: delivered(
                    lambda: self._topic.send(key=letter.key, value=encoded),
                    self._delivery_timeout,
                ),
                "dead letter",
                attempts=3,
            )
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            DEAD_LETTER_FAILURES.labels(reason=letter.reason, topic=topic).inc()
            log.error(
                "dead letter not written: %s",
                secrets.scrub_error(exc),
                extra={"dlq_reason": letter.reason, "source_topic": topic},
            )
            self._on_undeliverable(f"dead_letter_undeliverable: {letter.reason} from {topic}")

    async def event(
        self, event: EventT[Any], reason: str, error: str | BaseException | None = None
    ) -> None:
        """Dead-letter the faust event being processed (its message's coordinates, raw bytes)."""
        await self.record(event.message, reason, error)

    async def record(
        self, message: Any, reason: str, error: str | BaseException | None = None
    ) -> None:
        """Dead-letter a Kafka record (a faust message or an aiokafka `ConsumerRecord`)."""
        await self.send(
            reason=reason,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            error=error,
        )
