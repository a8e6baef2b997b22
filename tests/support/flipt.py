"""A tiny Flipt-protocol server for tests: boolean evaluation only, on 127.0.0.1, free port.

It stands in for the Flipt service (outside the project's real components). The test controls it:
`set_flag(key, enabled, entity=None)` defines a flag (or an override for one entity), `down = True`
makes every evaluation answer 503, `stop()` closes the port (connection refused). It runs its own
event loop in a thread, so both sync tests (with worker subprocesses) and async tests can use it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

EVALUATE_PATH = "/evaluate/v1/boolean"


class FakeFlipt:
    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace
        self.flags: dict[str, bool] = {}
        self.overrides: dict[tuple[str, str], bool] = {}
        self.down = False
        self.requests: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_flag(self, key: str, enabled: bool, entity: str | None = None) -> None:
        if entity is None:
            self.flags[key] = enabled
        else:
            self.flags.setdefault(key, False)
            self.overrides[(key, entity)] = enabled

    def delete_flag(self, key: str) -> None:
        self.flags.pop(key, None)
        for override in [o for o in self.overrides if o[0] == key]:
            del self.overrides[override]

    async def _evaluate(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"code": 14, "message": "unavailable"}, status=503)
        body = await request.json()
        self.requests.append(body)
        self.authorization.append(request.headers.get("Authorization"))
        key, entity = body.get("flagKey"), body.get("entityId")
        if body.get("namespaceKey") != self.namespace or key not in self.flags:
            message = f'flag "{body.get("namespaceKey")}/{key}" not found'
            return web.json_response({"code": 5, "message": message}, status=404)
        override = self.overrides.get((key, entity))
        enabled = self.flags[key] if override is None else override
        return web.json_response(
            {
                "enabled": enabled,
                "flagKey": key,
                "reason": "MATCH_EVALUATION_REASON" if override else "DEFAULT_EVALUATION_REASON",
                "requestId": str(uuid.uuid4()),
                "requestDurationMillis": 0.1,
                "timestamp": datetime.now(UTC).isoformat(),
            }
        )

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post(EVALUATE_PATH, self._evaluate)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def start(self) -> FakeFlipt:
        """Listen (on a free port the first time, on the same port after a `stop()`)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
            self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        """Close the port (clients get connection refused); `start()` again reopens it."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._runner = None

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeFlipt:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
