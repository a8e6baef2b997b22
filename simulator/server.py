"""Wires engine, HTTP routes, admin routes and the stream hub into one aiohttp server."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from aiohttp import web

from .admin import AdminApi
from .clock import Clock, ManualClock, RealClock
from .config import SimConfig, load_config
from .engine import Engine, TradeEvent
from .faults import Faults
from .http import TradingApi
from .ratelimit import RateLimiter
from .stream import StreamHub

log = logging.getLogger(__name__)

EXPIRY_CHECK_S = 1.0  # real clock: how often day orders are checked for expiry
MAX_ACTIONS_PER_TICK = 5_000  # keep the loop responsive when a burst of fills is queued


class Simulator:
    """One simulated broker. ``await start()`` inside a running loop; ``await stop()`` to end."""

    def __init__(self, config: SimConfig | Mapping[str, Any] | str | Path | None = None) -> None:
        self.config = load_config(config)
        self.clock: Clock = (
            ManualClock(self.config.start_time) if self.config.manual_clock else RealClock()
        )
        self.engine = Engine(self.config, self.clock)
        self.limiter = RateLimiter(self.clock, self.config.rate_limit_window_s)
        self.rate_limits: dict[str, int] = {}  # admin overrides
        self._faults: dict[str, Faults] = {}
        self.hub = StreamHub(
            self.engine,
            self.faults,
            binary=self.config.ws_binary_frames,
            reorder_hold_ms=self.config.reorder_hold_ms,
            log_size=self.config.event_log_size,
        )
        self.app = web.Application(client_max_size=1 << 20)
        TradingApi(self).register(self.app)
        AdminApi(self).register(self.app)
        self.app.router.add_get("/stream", self.hub.handle)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stopping = asyncio.Event()
        self._pump: asyncio.Handle | None = None
        self._expiry_task: asyncio.Task[None] | None = None
        self.host = "127.0.0.1"
        self.port = 0

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/stream"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._stopping.clear()
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port)
        await self._site.start()
        server = self._site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.host = host
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        if not self.clock.manual:
            self._expiry_task = asyncio.create_task(self._expiry_loop())

    async def stop(self) -> None:
        self._stopping.set()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry_task
            self._expiry_task = None
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self.hub.reset()
        await self.hub.disconnect()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._site = None

    async def _expiry_loop(self) -> None:
        while True:
            await asyncio.sleep(EXPIRY_CHECK_S)
            self.expire()

    # ---------------------------------------------------------------- engine pumping

    def kick(self) -> None:
        """Process queued actions soon (or after fill_delay_ms), outside the current request."""
        if self._pump is not None or not self.engine.has_pending():
            return
        loop = asyncio.get_running_loop()
        delay = self.config.fill_delay_ms / 1000
        if delay > 0:
            self._pump = loop.call_later(delay, self._run_pump)
        else:
            self._pump = loop.call_soon(self._run_pump)

    def _run_pump(self) -> None:
        self._pump = None
        # With a fill delay, only the actions queued before this tick run now: each step of an
        # order (ack, each partial fill, cancel) is then spaced by the delay.
        budget = self.engine.pending_count() if self.config.fill_delay_ms else MAX_ACTIONS_PER_TICK
        try:
            self.publish(self.engine.run_pending(min(budget, MAX_ACTIONS_PER_TICK)))
        except Exception:  # an engine bug must not stop the pump for every other account
            log.exception("simulator engine step failed")
        self.kick()

    def process_now(self) -> None:
        """Run every queued action synchronously (e.g. cancels before closing positions)."""
        self.publish(self.engine.run_pending())

    def publish(self, events: list[TradeEvent]) -> None:
        if events:
            self.hub.publish(events)

    def expire(self) -> None:
        self.publish(self.engine.expire_due())

    # ---------------------------------------------------------------- per-account knobs

    def faults(self, label: str) -> Faults:
        faults = self._faults.get(label)
        if faults is None:
            faults = self._faults[label] = Faults()
        return faults

    def clear_faults(self, label: str) -> None:
        self._faults[label] = Faults()
        self.hub.flush(label)

    def rate_limit(self, label: str) -> int:
        override = self.rate_limits.get(label)
        if override is not None:
            return override
        acct = self.engine.accounts.get(label)
        if acct is not None and acct.config.rate_limit_per_minute is not None:
            return acct.config.rate_limit_per_minute
        return self.config.rate_limit_per_minute

    def reset(self, seed: int | None = None) -> None:
        """Starting state again: accounts, prices, clock, faults, limits, event logs."""
        if self._pump is not None:
            self._pump.cancel()
            self._pump = None
        self.engine.reset(seed)
        self.limiter.reset()
        self.rate_limits.clear()
        self._faults.clear()
        self.hub.reset()

    # ---------------------------------------------------------------- fault helpers

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def hang(self, request: web.Request, seconds: float | None) -> NoReturn:
        """Never answer: wait for the client to go away (or the limit), then drop the connection."""
        loop = asyncio.get_running_loop()
        limit = self.config.hang_max_s if seconds is None else seconds
        deadline = loop.time() + limit
        while not self._stopping.is_set():
            transport = request.transport
            remaining = deadline - loop.time()
            if transport is None or transport.is_closing() or remaining <= 0:
                break
            await self.sleep(min(0.05, remaining))
        transport = request.transport
        if transport is not None:
            transport.close()
        # Cancelling the handler makes aiohttp drop the request without writing a response.
        raise asyncio.CancelledError
