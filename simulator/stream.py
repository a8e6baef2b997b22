"""The ``/stream`` websocket: authentication, ``listen``, and per-account trade_updates fan-out.

Each account's events pass through its fault pipeline (drop, duplicate, reorder) once, then the
same encoded bytes go to every listening connection of that account and of no other. Each
connection has its own queue and writer task, so a slow client never blocks the engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from .engine import Engine, TradeEvent
from .faults import Faults

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000  # a client this far behind is disconnected, as Alpaca does with slow readers


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode()


class Connection:
    __slots__ = ("binary", "label", "listening", "queue", "ws")

    def __init__(self, ws: web.WebSocketResponse, binary: bool) -> None:
        self.ws = ws
        self.label: str | None = None
        self.listening = False
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.binary = binary

    @property
    def overflowing(self) -> bool:
        return self.queue.qsize() >= MAX_QUEUED

    def send(self, payload: bytes) -> None:
        self.queue.put_nowait(payload)

    async def run_writer(self) -> None:
        while True:
            item = await self.queue.get()
            if item is None or self.ws.closed:
                return
            try:
                if self.binary:
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_str(item.decode())
            except (ConnectionError, RuntimeError):
                return


class _AccountPipeline:
    """Fault state of one account's event sequence."""

    __slots__ = ("held", "log", "timer")

    def __init__(self, log_size: int) -> None:
        self.held: tuple[bytes, int, dict[str, Any]] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.log: deque[dict[str, Any]] = deque(maxlen=log_size)


class StreamHub:
    def __init__(
        self,
        engine: Engine,
        faults: Callable[[str], Faults],
        *,
        binary: bool,
        reorder_hold_ms: int,
        log_size: int,
    ) -> None:
        self._engine = engine
        self._faults = faults
        self._binary = binary
        self._reorder_hold_s = reorder_hold_ms / 1000
        self._log_size = log_size
        self._listeners: dict[str, set[Connection]] = {}
        self._connections: set[Connection] = set()
        self._pipelines: dict[str, _AccountPipeline] = {}
        self._closing: set[asyncio.Future[bool]] = set()  # keeps close tasks referenced

    # ---------------------------------------------------------------- websocket endpoint

    async def handle(self, request: web.Request) -> web.StreamResponse:
        # No permessage-deflate: compressing every small event costs more CPU than it saves.
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        conn = Connection(ws, self._binary)
        writer = asyncio.create_task(conn.run_writer())
        self._connections.add(conn)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                if not self._on_message(conn, msg.data):
                    break
        finally:
            self._unlisten(conn)
            self._connections.discard(conn)
            conn.queue.put_nowait(None)
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer, 2.0)
            await ws.close()
        return ws

    def _on_message(self, conn: Connection, raw: str | bytes) -> bool:
        """Handle one client message; False closes the connection."""
        try:
            message = json.loads(raw)
        except ValueError:
            conn.send(_encode({"stream": "error", "data": {"error": "invalid json"}}))
            return True
        if not isinstance(message, dict):
            conn.send(_encode({"stream": "error", "data": {"error": "invalid message"}}))
            return True
        action = message.get("action")
        data = message.get("data")
        data = data if isinstance(data, dict) else {}
        if action in ("authenticate", "auth"):
            key = data.get("key_id", message.get("key"))
            secret = data.get("secret_key", message.get("secret"))
            acct = self._engine.authenticate(
                key if isinstance(key, str) else None, secret if isinstance(secret, str) else None
            )
            if acct is None or (conn.label is not None and conn.label != acct.label):
                conn.send(self._authorization("unauthorized"))
                return False
            conn.label = acct.label
            conn.send(self._authorization("authorized"))
            return True
        if conn.label is None:
            # The first reply is always an authorization message, as on Alpaca.
            conn.send(self._authorization("unauthorized", str(action)))
            return False
        if action == "listen":
            streams = data.get("streams")
            wanted = isinstance(streams, list) and "trade_updates" in streams
            if wanted:
                self._listeners.setdefault(conn.label, set()).add(conn)
                conn.listening = True
            else:
                self._unlisten(conn)
            conn.send(
                _encode(
                    {
                        "stream": "listening",
                        "data": {"streams": ["trade_updates"] if wanted else []},
                    }
                )
            )
            return True
        conn.send(
            _encode({"stream": "error", "data": {"error": f"unrecognized action {action!r}"}})
        )
        return True

    @staticmethod
    def _authorization(status: str, action: str = "authenticate") -> bytes:
        return _encode({"stream": "authorization", "data": {"status": status, "action": action}})

    def _unlisten(self, conn: Connection) -> None:
        if conn.label is not None and conn.listening:
            listeners = self._listeners.get(conn.label)
            if listeners is not None:
                listeners.discard(conn)
        conn.listening = False

    # ---------------------------------------------------------------- publishing

    def publish(self, events: list[TradeEvent]) -> None:
        for event in events:
            self._publish_one(event)

    def _pipeline(self, label: str) -> _AccountPipeline:
        pipeline = self._pipelines.get(label)
        if pipeline is None:
            pipeline = self._pipelines[label] = _AccountPipeline(self._log_size)
        return pipeline

    def _publish_one(self, event: TradeEvent) -> None:
        label = event.account
        faults = self._faults(label)
        pipeline = self._pipeline(label)
        data = event.data()
        entry: dict[str, Any] = {
            "event": event.event,
            "order_id": data["order"]["id"],
            "execution_id": event.execution_id,
            "status": data["order"]["status"],
            "dropped": False,
            "copies": 1,
            "data": data,
        }
        pipeline.log.append(entry)
        if faults.take("drop_next_events"):
            entry["dropped"] = True
            entry["copies"] = 0
            return
        copies = 2 if (faults.duplicate_events or faults.take("duplicate_next_events")) else 1
        entry["copies"] = copies
        payload = _encode({"stream": "trade_updates", "data": data})
        if faults.reorder_events:
            if pipeline.held is None:
                # Hold this one back; the next event (or the timer) releases it after itself.
                pipeline.held = (payload, copies, entry)
                entry["reordered"] = True
                loop = asyncio.get_running_loop()
                pipeline.timer = loop.call_later(self._reorder_hold_s, self.flush, label)
                return
            held_payload, held_copies, _ = pipeline.held
            self._release(pipeline)
            self._fan_out(label, payload, copies)
            self._fan_out(label, held_payload, held_copies)
            return
        if pipeline.held is not None:
            self.flush(label)
        self._fan_out(label, payload, copies)

    def _release(self, pipeline: _AccountPipeline) -> None:
        pipeline.held = None
        if pipeline.timer is not None:
            pipeline.timer.cancel()
            pipeline.timer = None

    def flush(self, label: str) -> None:
        """Deliver an event held back for reordering."""
        pipeline = self._pipelines.get(label)
        if pipeline is None or pipeline.held is None:
            return
        payload, copies, _ = pipeline.held
        self._release(pipeline)
        self._fan_out(label, payload, copies)

    def _fan_out(self, label: str, payload: bytes, copies: int) -> None:
        for conn in tuple(self._listeners.get(label, ())):
            if conn.overflowing:
                log.warning("closing a stream client of %s that stopped reading", label)
                self._unlisten(conn)
                closing = asyncio.ensure_future(conn.ws.close(code=1008))
                self._closing.add(closing)
                closing.add_done_callback(self._closing.discard)
                continue
            for _ in range(copies):
                conn.send(payload)

    # ---------------------------------------------------------------- admin views and control

    def events(self, label: str) -> list[dict[str, Any]]:
        return list(self._pipeline(label).log)

    def counts(self, label: str) -> dict[str, int]:
        connected = sum(1 for c in self._connections if c.label == label)
        return {"connected": connected, "listening": len(self._listeners.get(label, ()))}

    def reset(self) -> None:
        for pipeline in self._pipelines.values():
            self._release(pipeline)
        self._pipelines.clear()

    async def disconnect(self, label: str | None = None) -> int:
        """Close the connections of one account (all when ``label`` is None)."""
        targets = [c for c in self._connections if label is None or c.label == label]
        for conn in targets:
            self._unlisten(conn)
        await asyncio.gather(*(c.ws.close(code=1001) for c in targets), return_exceptions=True)
        return len(targets)
