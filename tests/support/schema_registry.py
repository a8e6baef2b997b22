"""A small Confluent schema registry over real HTTP (aiohttp), for tests.

Implements the two endpoints the project touches: `POST /subjects/{subject}/versions` (what a
producer calls to register its writer schema; returns `{"id": n}`) and `GET /schemas/ids/{id}`
(what the worker calls; `{"schema": "<avro json>"}`, or 404 with Confluent's error 40403).
`failing = True` makes every GET answer 500 (a registry that is down but reachable).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import ClientSession, web


class FakeSchemaRegistry:
    def __init__(self, first_id: int = 100) -> None:
        self.schemas: dict[int, str] = {}
        self.gets = 0
        self.failing = False
        self._next_id = first_id
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> FakeSchemaRegistry:
        app = web.Application()
        app.router.add_post("/subjects/{subject}/versions", self._register)
        app.router.add_get("/schemas/ids/{id}", self._schema)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _register(self, request: web.Request) -> web.Response:
        text = (await request.json())["schema"]
        for schema_id, known in self.schemas.items():
            if known == text:
                return web.json_response({"id": schema_id})
        schema_id, self._next_id = self._next_id, self._next_id + 1
        self.schemas[schema_id] = text
        return web.json_response({"id": schema_id})

    async def _schema(self, request: web.Request) -> web.Response:
        self.gets += 1
        if self.failing:
            return web.json_response({"error_code": 50001, "message": "store error"}, status=500)
        schema = self.schemas.get(int(request.match_info["id"]))
        if schema is None:
            body = {"error_code": 40403, "message": "Schema not found"}
            return web.json_response(body, status=404)
        return web.json_response({"schema": schema})


async def register(url: str, subject: str, schema: Any) -> int:
    """Register a writer schema the way a producer does; its id."""
    async with (
        ClientSession() as session,
        session.post(
            f"{url}/subjects/{subject}/versions", json={"schema": json.dumps(schema)}
        ) as response,
    ):
        response.raise_for_status()
        return int((await response.json())["id"])
