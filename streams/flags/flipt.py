"""Flipt backend: the boolean evaluation API, one request per (entity, flag key), concurrently.

`POST {FLIPT_URL}/evaluate/v1/boolean` with `{"namespaceKey", "flagKey", "entityId", "context"}`
answers `{"enabled": bool, ...}`. A flag that Flipt does not know (HTTP 404) takes its default (the
settings-derived value for the global entity, a neutral value for a lane). Any other failure
(connection refused, timeout, 5xx, malformed body) makes that entity unavailable: its lanes fail
safe.
Error texts carry the failure class and HTTP status only, never the token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from pydantic import SecretStr

from streams.flags.core import ALL_KEYS, GLOBAL_ENTITY, EntityFlags
from streams.flags.static import default_values

EVALUATE_PATH = "/evaluate/v1/boolean"


class FliptError(Exception):
    """One evaluation failed; the message is safe to log (no token, no body)."""


def evaluation_request(namespace: str, flag_key: str, entity: str) -> dict[str, Any]:
    context = {} if entity == GLOBAL_ENTITY else {"account_label": entity.partition(":")[2]}
    return {
        "namespaceKey": namespace,
        "flagKey": flag_key,
        "entityId": entity,
        "context": context,
    }


class FliptFlagBackend:
    name = "flipt"

    def __init__(
        self,
        url: str,
        namespace: str,
        token: SecretStr | None,
        global_defaults: Mapping[str, bool],
        timeout_seconds: float = 2.0,
    ) -> None:
        self._url = url.rstrip("/") + EVALUATE_PATH
        self._namespace = namespace
        self._token = token
        self._defaults = dict(global_defaults)
        self._timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Content-Type": "application/json"}
            if self._token is not None:
                headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
            self._session = aiohttp.ClientSession(headers=headers, timeout=self._timeout)
        return self._session

    async def evaluate(self, entities: Sequence[str]) -> dict[str, EntityFlags]:
        results = await asyncio.gather(*(self._evaluate_entity(e) for e in entities))
        return {flags.entity: flags for flags in results}

    async def _evaluate_entity(self, entity: str) -> EntityFlags:
        defaults = default_values(entity, self._defaults)
        try:
            found = await asyncio.gather(*(self._evaluate_one(key, entity) for key in ALL_KEYS))
        except FliptError as exc:
            return EntityFlags(entity, error=str(exc))
        values = {
            key: defaults[key] if value is None else value
            for key, value in zip(ALL_KEYS, found, strict=True)
        }
        return EntityFlags(entity, values)

    async def _evaluate_one(self, flag_key: str, entity: str) -> bool | None:
        """The flag's value, or None when Flipt does not define the flag."""
        body = evaluation_request(self._namespace, flag_key, entity)
        try:
            async with self._client().post(self._url, json=body) as response:
                if response.status == 404:
                    return None
                if response.status != 200:
                    raise FliptError(f"flipt answered HTTP {response.status} for {flag_key}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise FliptError(f"flipt unreachable ({type(exc).__name__}) for {flag_key}") from None
        enabled = payload.get("enabled") if isinstance(payload, dict) else None
        if not isinstance(enabled, bool):
            raise FliptError(f"flipt answer without a boolean 'enabled' for {flag_key}")
        return enabled

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
