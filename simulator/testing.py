"""Test helpers: run the simulator in-process (background thread) or as a subprocess.

    with RunningSimulator({"accounts": [...]}, seed=7) as sim:
        client = TradingClient(key, secret, url_override=sim.url)
        sim.admin.set_prices({"AAPL": "190.12"})

Both runners expose ``url``, ``ws_url``, ``admin`` (an :class:`AdminClient`), ``config`` and
``stop()``, and work as context managers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any

from .config import AccountConfig, ConfigSource, SimConfig, config_to_mapping, load_config
from .server import Simulator


class AdminError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"admin call failed with {status}: {body}")
        self.status = status
        self.body = body


class AdminClient:
    """A tiny synchronous client for the ``/admin`` API (stdlib only)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body, default=str).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"} if data is not None else {},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            try:
                detail: Any = json.loads(text)
            except ValueError:
                detail = text
            raise AdminError(exc.code, detail) from None
        return json.loads(raw) if raw else None

    # prices and clock
    def set_prices(self, prices: Mapping[str, str | Decimal | float | int]) -> dict[str, str]:
        result: dict[str, str] = self.call("POST", "/admin/prices", {"prices": dict(prices)})[
            "prices"
        ]
        return result

    def prices(self) -> dict[str, str]:
        result: dict[str, str] = self.call("GET", "/admin/prices")["prices"]
        return result

    def feed_signals(self, signals: list[Mapping[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", "/admin/signals", {"signals": list(signals)})
        return result

    def advance_clock(self, seconds: float = 0.0, *, to: str | None = None) -> str:
        body: dict[str, Any] = {"to": to} if to is not None else {"seconds": seconds}
        now: str = self.call("POST", "/admin/clock/advance", body)["now"]
        return now

    def reset(self, seed: int | None = None) -> None:
        self.call("POST", "/admin/reset", {} if seed is None else {"seed": seed})

    # faults and settings
    def set_faults(
        self, label: str, faults: Mapping[str, Any] | None = None, **kw: Any
    ) -> dict[str, Any]:
        body = dict(faults or {}) | kw
        result: dict[str, Any] = self.call("POST", f"/admin/accounts/{label}/faults", body)
        return result

    def clear_faults(self, label: str) -> None:
        self.call("DELETE", f"/admin/accounts/{label}/faults")

    def faults(self, label: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/admin/accounts/{label}/faults")
        return result

    def settings(self, label: str, **kw: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.call("POST", f"/admin/accounts/{label}/settings", kw)
        return result

    # accounts and views
    def add_account(self, label: str, key: str, secret: str, **kw: Any) -> dict[str, Any]:
        body = {"label": label, "key": key, "secret": secret} | kw
        result: dict[str, Any] = self.call("POST", "/admin/accounts", body)
        return result

    def account(self, label: str) -> dict[str, Any]:
        result: dict[str, Any] = self.call("GET", f"/admin/accounts/{label}")
        return result

    def orders(self, label: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/admin/accounts/{label}/orders")
        return result

    def events(self, label: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.call("GET", f"/admin/accounts/{label}/events")
        return result

    def connections(self, label: str) -> dict[str, int]:
        result: dict[str, int] = self.call("GET", f"/admin/accounts/{label}/connections")
        return result

    def disconnect(self, label: str) -> int:
        closed: int = self.call("POST", f"/admin/accounts/{label}/disconnect")["closed"]
        return closed

    def wait_listening(self, label: str, count: int = 1, timeout: float = 5.0) -> None:
        """Block until ``count`` stream connections of the account listen to trade_updates."""
        deadline = time.monotonic() + timeout
        while self.connections(label)["listening"] < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: fewer than {count} listening stream connections")
            time.sleep(0.01)

    def wait_for_events(self, label: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until the account has generated at least ``count`` trade updates."""
        deadline = time.monotonic() + timeout
        while True:
            events = self.events(label)
            if len(events) >= count:
                return events
            if time.monotonic() > deadline:
                raise TimeoutError(f"{label}: {len(events)} events, wanted {count}")
            time.sleep(0.01)


class _Runner:
    config: SimConfig
    url: str
    ws_url: str
    admin: AdminClient

    def account(self, label: str) -> AccountConfig:
        for account in self.config.accounts:
            if account.label == label:
                return account
        raise KeyError(label)

    def trading_client(self, label: str, *, retry_wait: int = 0, retries: int = 3) -> Any:
        """alpaca-py TradingClient for an account; retries wait ``retry_wait`` s (SDK: 3)."""
        from alpaca.trading.client import TradingClient

        account = self.account(label)
        client = TradingClient(account.key, account.secret, paper=True, url_override=self.url)
        client._retry_wait = retry_wait
        client._retry = retries
        return client

    def trading_stream(self, label: str) -> Any:
        from alpaca.trading.stream import TradingStream

        account = self.account(label)
        return TradingStream(account.key, account.secret, paper=True, url_override=self.ws_url)

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> _Runner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class RunningSimulator(_Runner):
    """The simulator on a background thread with its own event loop, on a free port.

    ``overrides`` replace config fields (``seed=7, manual_clock=True, partial_fill_prob=0.1``).
    ``simulator`` is the live object: touch it only through ``call()`` (it runs on the loop).
    """

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        **overrides: Any,
    ) -> None:
        self.config = load_config(config).with_overrides(**overrides)
        self.simulator = Simulator(self.config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="simulator", daemon=True
        )
        self._thread.start()
        try:
            self.call(self.simulator.start(host, port))
        except BaseException:
            self._shutdown_loop()
            raise
        self.url = self.simulator.url
        self.ws_url = self.simulator.ws_url
        self.admin = AdminClient(self.url)
        self._stopped = False

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the simulator's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            self.call(self.simulator.stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> RunningSimulator:
        return self


class SimulatorProcess(_Runner):
    """``python -m simulator`` as a child process, stopped with SIGTERM to its own PID."""

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        port: int = 0,
        extra_args: tuple[str, ...] = (),
        startup_timeout: float = 15.0,
        **overrides: Any,
    ) -> None:
        self.config = load_config(config).with_overrides(**overrides)
        handle, path = tempfile.mkstemp(prefix="simulator-", suffix=".json")
        with os.fdopen(handle, "w") as f:
            json.dump(config_to_mapping(self.config), f)
        self._config_path = path
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = (
            root + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else root
        )
        cmd = [
            sys.executable,
            "-m",
            "simulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--config",
            path,
            *extra_args,
        ]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, env=env, text=True)
        self.pid = self.process.pid
        self._stopped = False
        try:
            line = self._read_line(startup_timeout)
            info = json.loads(line)
        except BaseException:
            self.stop()
            raise
        self.url = str(info["url"])
        self.ws_url = str(info["ws_url"])
        self.admin = AdminClient(self.url)

    def _read_line(self, timeout: float) -> str:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("simulator did not print its URL in time")
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"simulator exited early with {self.process.wait()}")
        return line

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.process.poll() is None:
                os.kill(self.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self.process.wait(timeout)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            Path(self._config_path).unlink(missing_ok=True)

    def __enter__(self) -> SimulatorProcess:
        return self


class TradeUpdateCollector:
    """Runs alpaca-py's real ``TradingStream`` for one account on its own thread and loop,
    collecting every TradeUpdate. Stopping cancels ``_run_forever()`` directly because
    ``TradingStream.stop()`` only takes effect after the next message or a 5 s receive timeout.
    """

    def __init__(
        self, runner: _Runner, label: str, *, wait: bool = True, raw: bool = False
    ) -> None:
        from alpaca.trading.stream import TradingStream

        account = runner.account(label)
        self.label = label
        self.stream = TradingStream(
            account.key, account.secret, paper=True, raw_data=raw, url_override=runner.ws_url
        )
        self.updates: list[Any] = []
        self._cond = threading.Condition()
        self.stream.subscribe_trade_updates(self._on_update)
        listening_before = runner.admin.connections(label)["listening"] if wait else 0
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task[Any] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"stream-{label}", daemon=True)
        self._thread.start()
        self._started.wait(5)
        if wait:
            runner.admin.wait_listening(label, listening_before + 1)

    async def _on_update(self, update: Any) -> None:
        with self._cond:
            self.updates.append(update)
            self._cond.notify_all()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        stream: Any = self.stream  # _run_forever is untyped in alpaca-py
        self._task = self._loop.create_task(stream._run_forever())
        self._started.set()
        try:
            # TradingStream swallows its own errors and reconnects; only our cancel ends it.
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(self._task)
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                self._loop.run_until_complete(self.stream.close())
            self._loop.close()

    def wait_for(self, predicate: Any, timeout: float = 5.0) -> list[Any]:
        """Block until ``predicate(updates)`` is true; return a copy of the updates."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.updates):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.label}: condition not met; got {self.events()}")
                self._cond.wait(remaining)
            return list(self.updates)

    def wait_count(self, count: int, timeout: float = 5.0) -> list[Any]:
        return self.wait_for(lambda updates: len(updates) >= count, timeout)

    def events(self) -> list[str]:
        """Event names received so far, in arrival order."""
        with self._cond:
            return [str(getattr(u, "event", "")) for u in self.updates]

    def stop(self) -> None:
        if self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(10)

    def __enter__(self) -> TradeUpdateCollector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.005) -> Any:
    """Poll ``predicate()`` until it returns something truthy; return that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def wait_order_status(client: Any, order_id: Any, status: str, timeout: float = 5.0) -> Any:
    """Poll ``client.get_order_by_id`` until the order has ``status``; return the order."""

    def check() -> Any:
        order = client.get_order_by_id(order_id)
        return order if order.status.value == status else None

    return wait_until(check, timeout)
