"""TA signal bytes → a valid `TaSignal`, with Confluent schema ids checked (one per worker).

- JSON and bare Avro: `schemas.codecs.decode_ta_signal` (bare Avro is `ta-signals.avsc`).
- Confluent framing (magic 0 + schema id) with an accepted id (`TORGHUT_TA_SIGNAL_SCHEMA_IDS`):
  read as `ta-signals.avsc` itself, on the compiled hot path.
- Any other id: with `TORGHUT_SCHEMA_REGISTRY_URL`, its writer schema is fetched from the registry
  once (`GET {url}/schemas/ids/{id}`), cached here, and resolved against `ta-signals.avsc`;
  without a registry, or when the registry does not know the id, `unknown_schema_id`.

A registry that cannot answer (down, 5xx, timeouts) is retried a bounded number of times, then
the record is dead-lettered as `schema_registry_unavailable` with its raw bytes: the signals
stage must not stall every symbol behind one unreadable schema (a signal delayed is a signal
worth less, and nothing on the order path waits without a bound), and the dead letter keeps the
record for a re-drive. For `cooldown` seconds after such a failure the registry is not asked
again (each record would otherwise wait out the retries).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Set
from typing import Any

import aiohttp
import fastavro

from schemas.codecs import (
    CONFLUENT_MAGIC,
    DecodeError,
    decode_ta_signal,
    decode_ta_signal_with_writer,
    split_confluent,
    unknown_schema_id,
)
from schemas.ta_signal import TaSignal
from streams.settings import Settings

log = logging.getLogger(__name__)


class RegistryUnavailable(Exception):
    pass


class UnknownSchemaId(Exception):
    pass


class SchemaRegistry:
    """Writer schemas by id from a Confluent schema registry, fetched once and cached.

    Ids are immutable in a registry, so a fetched schema is kept for the life of the worker; an
    id the registry does not know is remembered for `unknown_ttl` seconds (it may be registered
    later, but a stream of bad ids must not become a stream of requests).
    """

    def __init__(
        self,
        url: str,
        *,
        attempts: int = 3,
        timeout: float = 2.0,
        backoff: float = 0.2,
        cooldown: float = 5.0,
        unknown_ttl: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/")
        self._attempts = attempts
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._backoff = backoff
        self._cooldown = cooldown
        self._unknown_ttl = unknown_ttl
        self._monotonic = monotonic
        self._schemas: dict[int, Any] = {}
        self._unknown_until: dict[int, float] = {}
        self._down_until = 0.0
        self._session: aiohttp.ClientSession | None = None
        self.fetches = 0  # HTTP requests made (observability and tests)

    async def writer_schema(self, schema_id: int) -> Any:
        """The parsed writer schema; `UnknownSchemaId` or `RegistryUnavailable` otherwise."""
        cached = self._schemas.get(schema_id)
        if cached is not None:
            return cached
        now = self._monotonic()
        if self._unknown_until.get(schema_id, 0.0) > now:
            raise UnknownSchemaId(f"schema id {schema_id} unknown to the registry")
        if self._down_until > now:
            raise RegistryUnavailable("schema registry unavailable (cooling down)")
        error = "no attempt"
        for attempt in range(self._attempts):
            if attempt:
                await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            try:
                schema = await self._fetch(schema_id)
            except (aiohttp.ClientError, TimeoutError, _Retryable) as exc:
                error = f"{type(exc).__name__}: {exc}"[:200]
                continue
            self._schemas[schema_id] = schema
            return schema
        self._down_until = self._monotonic() + self._cooldown
        log.warning("schema registry unavailable: %s", error, extra={"schema_id": schema_id})
        raise RegistryUnavailable(f"schema registry unavailable after {self._attempts} attempts")

    async def _fetch(self, schema_id: int) -> Any:
        self.fetches += 1
        session = self._get_session()
        async with session.get(f"{self.url}/schemas/ids/{schema_id}") as response:
            if response.status == 404:
                self._unknown_until[schema_id] = self._monotonic() + self._unknown_ttl
                raise UnknownSchemaId(f"schema id {schema_id} unknown to the registry")
            if response.status != 200:
                raise _Retryable(f"HTTP {response.status}")
            body = await response.json(content_type=None)
        return _parse_writer_schema(schema_id, body)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class _Retryable(Exception):
    pass


def _parse_writer_schema(schema_id: int, body: Any) -> Any:
    """The registry's answer as a parsed Avro schema (a non-Avro schema is not ours to read)."""
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise _Retryable("malformed registry answer")
    if body.get("schemaType", "AVRO") != "AVRO":
        raise DecodeError(
            "schema_incompatible", f"TaSignal: schema id {schema_id} is {body['schemaType']}"
        )
    try:
        return fastavro.parse_schema(json.loads(body["schema"]), named_schemas={})
    except Exception as exc:  # noqa: BLE001 - a schema we cannot parse is not one we can read
        raise DecodeError(
            "schema_incompatible",
            f"TaSignal: schema id {schema_id} does not parse ({type(exc).__name__})",
        ) from None


class SignalDecoder:
    """The worker's TA signal decoder: accepted ids on the hot path, the registry for others."""

    def __init__(self, accepted_ids: Set[int], registry: SchemaRegistry | None = None) -> None:
        self.accepted_ids = frozenset(accepted_ids)
        self.registry = registry

    @classmethod
    def for_settings(cls, settings: Settings) -> SignalDecoder:
        url = settings.schema_registry_url
        return cls(settings.ta_signal_schema_id_set, SchemaRegistry(url) if url else None)

    async def decode(self, raw: bytes | None) -> TaSignal:
        """A valid signal, or `DecodeError` with the dead-letter reason."""
        if not raw or raw[0] != CONFLUENT_MAGIC or self.registry is None:
            return decode_ta_signal(raw, self.accepted_ids)
        schema_id, body = split_confluent(bytes(raw))
        if schema_id in self.accepted_ids:
            return decode_ta_signal(raw, self.accepted_ids)
        try:
            writer = await self.registry.writer_schema(schema_id)
        except UnknownSchemaId:
            raise unknown_schema_id(schema_id) from None
        except RegistryUnavailable as exc:
            raise DecodeError("schema_registry_unavailable", f"TaSignal: {exc}") from None
        return decode_ta_signal_with_writer(body, writer)

    async def close(self) -> None:
        if self.registry is not None:
            await self.registry.close()
