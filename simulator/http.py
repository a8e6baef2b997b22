"""Alpaca Trading API v2 routes: authentication, rate limit, request faults, error shapes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import errors
from .errors import ApiError
from .formats import parse_ts, to_decimal
from .state import AccountState

if TYPE_CHECKING:
    from .server import Simulator

Handler = Callable[[web.Request, AccountState], Awaitable[web.StreamResponse]]
Wrapped = Callable[[web.Request], Awaitable[web.StreamResponse]]

GATEWAY_TIMEOUT_HTML = (
    "<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n"
    "<body>\r\n<center><h1>504 Gateway Time-out</h1></center>\r\n</body>\r\n</html>\r\n"
)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(exc: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(exc.body(), exc.status, headers)


class TradingApi:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.engine = sim.engine

    def register(self, app: web.Application) -> None:
        r = app.router
        w = self._wrap
        r.add_post("/v2/orders", w(self.submit_order))
        r.add_get("/v2/orders", w(self.list_orders))
        r.add_delete("/v2/orders", w(self.cancel_all))
        r.add_get("/v2/orders:by_client_order_id", w(self.get_by_client_id))
        r.add_get("/v2/orders/{order_id}", w(self.get_order))
        r.add_delete("/v2/orders/{order_id}", w(self.cancel_order))
        r.add_get("/v2/positions", w(self.positions))
        r.add_delete("/v2/positions", w(self.close_all_positions))
        r.add_get("/v2/positions/{symbol:.+}", w(self.position))
        r.add_delete("/v2/positions/{symbol:.+}", w(self.close_position))
        r.add_get("/v2/account", w(self.account))
        r.add_get("/v2/account/configurations", w(self.account_configurations))
        r.add_patch("/v2/account/configurations", w(self.update_configurations))
        r.add_get("/v2/account/activities", w(self.activities))
        r.add_get("/v2/account/activities/{activity_type}", w(self.activities))
        r.add_get("/v2/clock", w(self.clock))
        r.add_get("/v2/assets", w(self.assets))
        r.add_get("/v2/assets/{symbol:.+}", w(self.asset))
        r.add_route("*", "/v2/{tail:.*}", w(self.unknown))

    # ---------------------------------------------------------------- the common wrapper

    def _wrap(self, handler: Handler) -> Wrapped:
        sim = self.sim

        async def wrapped(request: web.Request) -> web.StreamResponse:
            acct = self.engine.authenticate(
                request.headers.get("APCA-API-KEY-ID"), request.headers.get("APCA-API-SECRET-KEY")
            )
            if acct is None:
                return json_response({"message": "unauthorized."}, 401)
            limit = sim.rate_limit(acct.label)
            decision = sim.limiter.hit(acct.label, limit)
            headers = decision.headers()
            if not decision.allowed:
                return error_response(
                    ApiError(429, errors.RATE_LIMITED, "rate limit exceeded"), headers
                )
            faults = sim.faults(acct.label)
            fault = faults.take_request_fault(request.method)
            if fault == "force_429":
                headers = sim.limiter.exhausted(acct.label, limit).headers()
                return error_response(
                    ApiError(429, errors.RATE_LIMITED, "rate limit exceeded"), headers
                )
            if fault == "http_5xx":
                exc = ApiError(
                    faults.http_5xx_status, errors.INTERNAL, "internal server error occurred"
                )
                return error_response(exc, headers)
            if fault == "hang_next":
                await sim.hang(request, faults.hang_seconds)
            try:
                response = await handler(request, acct)
            except ApiError as exc:
                response = error_response(exc)
            response.headers.update(headers)
            sim.kick()
            return response

        return wrapped

    # ---------------------------------------------------------------- orders

    @staticmethod
    async def _json_object(request: web.Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.text(), parse_float=Decimal)
        except ValueError:
            raise ApiError(400, errors.BAD_BODY, "request body format is invalid") from None
        if not isinstance(body, dict):
            raise ApiError(400, errors.BAD_BODY, "request body format is invalid")
        return body

    async def submit_order(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        body = await self._json_object(request)
        faults = self.sim.faults(acct.label)
        reject = faults.reject_next_orders > 0
        order = self.engine.submit(acct, body, reject=reject)
        if reject:
            faults.take("reject_next_orders")
        snapshot = order.to_json()  # the answer reflects acceptance, whatever happens next
        self.sim.kick()
        if faults.delay_post_response_ms:
            await self.sim.sleep(faults.delay_post_response_ms / 1000)
        if faults.take("hang_after_accept"):
            await self.sim.hang(request, faults.hang_seconds)
        if faults.take("post_504_after_accept"):
            return web.Response(status=504, text=GATEWAY_TIMEOUT_HTML, content_type="text/html")
        return json_response(snapshot)

    async def list_orders(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
            after = parse_ts(q["after"]) if "after" in q else None
            until = parse_ts(q["until"]) if "until" in q else None
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None
        symbols = [s for s in q.get("symbols", "").split(",") if s.strip()] or None
        orders = self.engine.list_orders(
            acct,
            status=q.get("status", "open"),
            after=after,
            until=until,
            limit=limit,
            direction=q.get("direction", "desc"),
            symbols=symbols,
            side=q.get("side"),
        )
        return json_response([o.to_json() for o in orders])

    async def get_order(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        return json_response(self.engine.get_order(acct, request.match_info["order_id"]).to_json())

    async def get_by_client_id(
        self, request: web.Request, acct: AccountState
    ) -> web.StreamResponse:
        client_order_id = request.query.get("client_order_id")
        if not client_order_id:
            raise errors.invalid("client_order_id is required")
        return json_response(self.engine.get_by_client_id(acct, client_order_id).to_json())

    async def cancel_order(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        self.engine.request_cancel(acct, request.match_info["order_id"])
        return web.Response(status=204)

    async def cancel_all(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        orders = self.engine.cancel_all(acct)
        return json_response([{"id": o.id, "status": 200} for o in orders], 207)

    # ---------------------------------------------------------------- positions and account

    async def positions(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        return json_response(self.engine.positions_json(acct))

    async def position(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        pos = self.engine.find_position(acct, request.match_info["symbol"])
        return json_response(self.engine.position_json(acct, pos))

    async def close_position(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        q = request.query
        try:
            qty = to_decimal(q["qty"], "qty") if "qty" in q else None
            pct = to_decimal(q["percentage"], "percentage") if "percentage" in q else None
        except ValueError as exc:
            raise errors.invalid(str(exc)) from None
        order = self.engine.close_position(acct, request.match_info["symbol"], qty, pct)
        return json_response(order.to_json())

    async def close_all_positions(
        self, request: web.Request, acct: AccountState
    ) -> web.StreamResponse:
        if request.query.get("cancel_orders", "").lower() == "true":
            self.engine.cancel_all(acct)
            self.sim.process_now()  # release held quantities before closing
        results: list[dict[str, Any]] = []
        for symbol in sorted(acct.positions):
            asset = acct.positions[symbol].asset
            try:
                order = self.engine.close_position(acct, symbol)
                results.append(
                    {
                        "symbol": asset.position_symbol,
                        "order_id": order.id,
                        "status": 200,
                        "body": order.to_json(),
                    }
                )
            except ApiError as exc:
                body = exc.body() | {"symbol": asset.position_symbol}
                results.append(
                    {"symbol": asset.position_symbol, "status": exc.status, "body": body}
                )
        return json_response(results, 207)

    async def account(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        return json_response(self.engine.account_json(acct))

    async def account_configurations(
        self, request: web.Request, acct: AccountState
    ) -> web.StreamResponse:
        return json_response(self.engine.account_configuration_json(acct))

    async def update_configurations(
        self, request: web.Request, acct: AccountState
    ) -> web.StreamResponse:
        body = await self._json_object(request)
        self.engine.update_configuration(acct, body)
        return json_response(self.engine.account_configuration_json(acct))

    async def activities(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        query = request.query
        one = request.match_info.get("activity_type")
        types = [one] if one else [t for t in query.get("activity_types", "FILL").split(",") if t]
        try:
            page_size = int(query.get("page_size", "100"))
        except ValueError:
            raise ApiError(422, errors.INVALID_REQUEST, "page_size must be an integer") from None
        rows = self.engine.activities(
            acct,
            activity_types=types,
            page_token=query.get("page_token"),
            page_size=page_size,
            direction=query.get("direction", "desc"),
        )
        return json_response(rows)

    async def clock(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        return json_response(self.engine.clock_json())

    async def assets(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        wanted_class = request.query.get("asset_class")
        status = request.query.get("status", "active")
        items = [
            a.to_json()
            for a in self.engine.assets
            if (wanted_class is None or a.asset_class == wanted_class) and status == "active"
        ]
        return json_response(items)

    async def asset(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        asset = self.engine.assets.find(request.match_info["symbol"])
        if asset is None:
            raise ApiError(404, errors.NOT_FOUND, "asset not found")
        return json_response(asset.to_json())

    async def unknown(self, request: web.Request, acct: AccountState) -> web.StreamResponse:
        raise ApiError(404, errors.NOT_FOUND, "endpoint not found")
