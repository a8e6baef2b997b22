"""Admin routes under ``/admin``: prices, faults, clock, reset and read-only views. No auth:
the server only listens on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .config import config_from_mapping
from .formats import fmt_decimal, fmt_ts, parse_ts
from .signals import price_from_signal
from .state import AccountState

if TYPE_CHECKING:
    from .server import Simulator

AdminHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise AdminError(400, "body must be JSON") from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise AdminError(400, "body must be a JSON object")
    return body


class AdminApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = sim.engine

    def register(self, app: web.Application) -> None:
        r = app.router
        w = self._wrap
        r.add_get("/admin/health", w(self.health))
        r.add_get("/admin/state", w(self.state))
        r.add_get("/admin/prices", w(self.get_prices))
        r.add_post("/admin/prices", w(self.set_prices))
        r.add_post("/admin/signals", w(self.signals))
        r.add_get("/admin/clock", w(self.get_clock))
        r.add_post("/admin/clock/advance", w(self.advance_clock))
        r.add_post("/admin/reset", w(self.reset))
        r.add_get("/admin/accounts", w(self.list_accounts))
        r.add_post("/admin/accounts", w(self.add_account))
        r.add_get("/admin/accounts/{label}", w(self.account))
        r.add_get("/admin/accounts/{label}/faults", w(self.get_faults))
        r.add_post("/admin/accounts/{label}/faults", w(self.set_faults))
        r.add_delete("/admin/accounts/{label}/faults", w(self.clear_faults))
        r.add_post("/admin/accounts/{label}/settings", w(self.settings))
        r.add_get("/admin/accounts/{label}/orders", w(self.orders))
        r.add_get("/admin/accounts/{label}/events", w(self.events))
        r.add_get("/admin/accounts/{label}/connections", w(self.connections))
        r.add_post("/admin/accounts/{label}/disconnect", w(self.disconnect))

    def _wrap(self, handler: AdminHandler) -> AdminHandler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                response = await handler(request)
            except AdminError as exc:
                return _json({"error": str(exc)}, exc.status)
            except (ValueError, RuntimeError) as exc:
                return _json({"error": str(exc)}, 400)
            self.sim.kick()
            return response

        return wrapped

    def _account(self, request: web.Request) -> AccountState:
        acct = self.engine.accounts.get(request.match_info["label"])
        if acct is None:
            raise AdminError(404, f"unknown account {request.match_info['label']!r}")
        return acct

    # ---------------------------------------------------------------- global

    async def health(self, request: web.Request) -> web.StreamResponse:
        return _json({"ok": True})

    async def state(self, request: web.Request) -> web.StreamResponse:
        return _json(
            {
                "clock": fmt_ts(self.engine.clock.now()),
                "manual_clock": self.engine.clock.manual,
                "seed": self.engine.seed,
                "prices": self._prices(),
                "accounts": sorted(self.engine.accounts),
                "pending_actions": self.engine.pending_count(),
            }
        )

    def _prices(self) -> dict[str, str]:
        return {s: fmt_decimal(p) for s, p in sorted(self.engine.prices.items())}

    async def get_prices(self, request: web.Request) -> web.StreamResponse:
        return _json({"prices": self._prices()})

    async def set_prices(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        prices = body.get("prices")
        if not isinstance(prices, dict):
            raise AdminError(400, 'expected {"prices": {"SYMBOL": "price", ...}}')
        updated = self.engine.set_prices(prices)
        return _json({"prices": {s: fmt_decimal(p) for s, p in updated.items()}})

    async def signals(self, request: web.Request) -> web.StreamResponse:
        """Feed TA signals ({"signals": [...]} or one signal); each sets its symbol's price."""
        body = await _body(request)
        raw = body.get("signals", [body])
        if not isinstance(raw, list):
            raise AdminError(400, "signals must be a list")
        prices: dict[str, object] = {}
        skipped = 0
        for signal in raw:
            if not isinstance(signal, dict) or not isinstance(signal.get("symbol"), str):
                raise AdminError(400, "each signal needs a symbol")
            price = price_from_signal(signal)
            if price is None or self.engine.assets.find(signal["symbol"]) is None:
                skipped += 1
                continue
            prices[signal["symbol"]] = price
        updated = self.engine.set_prices(prices)
        return _json(
            {"prices": {s: fmt_decimal(p) for s, p in updated.items()}, "skipped": skipped}
        )

    async def get_clock(self, request: web.Request) -> web.StreamResponse:
        clock = self.engine.clock
        return _json({"now": fmt_ts(clock.now()), "manual": clock.manual})

    async def advance_clock(self, request: web.Request) -> web.StreamResponse:
        """{"seconds": 1.5} or {"to": "2026-01-05T21:00:00Z"}; expires due day orders."""
        body = await _body(request)
        clock = self.engine.clock
        if "to" in body:
            clock.set(parse_ts(str(body["to"])))
        else:
            seconds = body.get("seconds", 0)
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
                raise AdminError(400, "seconds must be a number")
            clock.advance(float(seconds))
        self.sim.expire()
        return _json({"now": fmt_ts(clock.now()), "manual": clock.manual})

    async def reset(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise AdminError(400, "seed must be an integer")
        self.sim.reset(seed)
        return _json({"ok": True, "seed": self.engine.seed, "now": fmt_ts(self.engine.clock.now())})

    # ---------------------------------------------------------------- accounts

    async def list_accounts(self, request: web.Request) -> web.StreamResponse:
        return _json(
            [
                {"label": a.label, "key": a.config.key, "id": str(a.id)}
                for a in self.engine.accounts.values()
            ]
        )

    async def add_account(self, request: web.Request) -> web.StreamResponse:
        body = await _body(request)
        cfg = config_from_mapping({"accounts": [body]}).accounts[0]
        try:
            acct = self.engine.add_account(cfg)
        except ValueError as exc:
            raise AdminError(409, str(exc)) from None
        return _json({"label": acct.label, "key": cfg.key, "id": str(acct.id)}, 201)

    async def account(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        return _json(
            {
                "label": acct.label,
                "account": self.engine.account_json(acct),
                "positions": self.engine.positions_json(acct),
                "open_orders": len(acct.open_orders),
                "orders": len(acct.orders),
                "faults": self.sim.faults(acct.label).to_json(),
                "rate_limit_per_minute": self.sim.rate_limit(acct.label),
                "partial_fill_prob": self.engine.partial_fill_prob[acct.label],
                "fees": fmt_decimal(acct.fees),
                "connections": self.sim.hub.counts(acct.label),
            }
        )

    async def get_faults(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        return _json(self.sim.faults(acct.label).to_json())

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        body = await _body(request)
        faults = self.sim.faults(acct.label)
        faults.update(body)
        if not faults.reorder_events:
            self.sim.hub.flush(acct.label)
        return _json(faults.to_json())

    async def clear_faults(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        self.sim.clear_faults(acct.label)
        return _json(self.sim.faults(acct.label).to_json())

    async def settings(self, request: web.Request) -> web.StreamResponse:
        """Per-account knobs: {"partial_fill_prob": 0.5, "rate_limit_per_minute": 1000}."""
        acct = self._account(request)
        body = await _body(request)
        for name, value in body.items():
            if name == "partial_fill_prob":
                prob = float(value)
                if not 0.0 <= prob <= 1.0:
                    raise AdminError(400, "partial_fill_prob must be within [0, 1]")
                self.engine.partial_fill_prob[acct.label] = prob
            elif name == "rate_limit_per_minute":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise AdminError(400, "rate_limit_per_minute must be an integer >= 1")
                self.sim.rate_limits[acct.label] = value
            else:
                raise AdminError(400, f"unknown setting {name!r}")
        return _json(
            {
                "partial_fill_prob": self.engine.partial_fill_prob[acct.label],
                "rate_limit_per_minute": self.sim.rate_limit(acct.label),
            }
        )

    async def orders(self, request: web.Request) -> web.StreamResponse:
        """Every order of the account, oldest first (no rate limit, no filters)."""
        acct = self._account(request)
        return _json([o.to_json() for o in acct.order_list])

    async def events(self, request: web.Request) -> web.StreamResponse:
        """Every trade update generated for the account, with its fault fate (dropped, copies)."""
        acct = self._account(request)
        return _json(self.sim.hub.events(acct.label))

    async def connections(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        return _json(self.sim.hub.counts(acct.label))

    async def disconnect(self, request: web.Request) -> web.StreamResponse:
        acct = self._account(request)
        closed = await self.sim.hub.disconnect(acct.label)
        return _json({"closed": closed})
