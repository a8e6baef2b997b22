"""Alpaca adapter: the REST calls of one account, never blocking the event loop.

- The account's own `base_url` (`url_override`) and mode (`paper=account.mode == "paper"`) as
  alpaca-py's `TradingClient` resolves them; answers as with `raw_data=True` (dicts; money stays
  decimal strings).
- Two HTTP clients, one chosen for the process (`TORGHUT_BROKER_HTTP`):
  - `aiohttp` (default): the same requests alpaca-py would send (its request models, URL and
    headers), made from the event loop over one keep-alive aiohttp session per account
    (`streams/broker/http.py`). No thread, no GIL hand-off on the order path.
  - `alpaca-py`: alpaca-py's blocking client, each call in the account's own bounded thread
    pool, the HTTP session itself with a socket timeout so a hung request releases its thread.
  Either way a call is bounded by `timeout_seconds` (the thread path: plus a 1 s backstop over
  the socket timeout) and every failure becomes one classified `BrokerError`.
- alpaca-py retries 429 and 504 (POST included) three times with a blocking 3 s sleep. That
  would hold the lane for 9 s and re-POST an order that may have landed; it is turned off (the
  aiohttp client never retries). A 504 is answered here by a lookup by client order id; if an
  order is ever re-POSTed anyway, the broker's 422 duplicate answer is resolved the same way
  (`submit_order` fetches it).
- A per-account token bucket keeps the account under Alpaca's 200 requests/minute; a call that
  would wait longer than `max_token_wait` fails fast with `rate_limit` instead of blocking.
- The brokers of one process share `call_slots`, a bound on broker calls in flight at once
  (sockets open, threads busy on the thread path): with 100 accounts, timers that fan out to
  every account (reconcile, snapshots) would otherwise open hundreds of requests at once (on the
  thread path: hundreds of threads fighting the event loop for the GIL). A call that gets no
  slot within its timeout fails with `rate_limit` (nothing was sent). Each account first takes
  one of its own `account_slots` (`max_workers`: its threads, or its session's connections), so
  an account whose broker hangs holds at most that many of the shared slots, never all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import requests
from alpaca.common.utils import validate_uuid_id_param
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from requests.adapters import HTTPAdapter
from requests.models import PreparedRequest
from requests.utils import get_netrc_auth

from streams.broker.errors import BrokerError, ErrorClass, classify
from streams.broker.http import AlpacaHttp, HttpEnvironment, TlsContexts
from streams.broker.ratelimit import TokenBucket
from streams.compat import (
    close_rest_client,
    configure_rest_client,
    rest_base_url,
    rest_request_defaults,
)
from streams.domain.accounts import Account, AccountMode
from streams.domain.sizing import OrderPlan
from streams.observability.metrics import broker_call_timer
from streams.settings import BrokerHttpClient

if TYPE_CHECKING:  # types of the requests stubs only
    from requests.adapters import _HostParams, _PoolKwargs

log = logging.getLogger(__name__)

Order = dict[str, Any]


class _PoolKeyCachingAdapter(HTTPAdapter):
    """An adapter that works out each pool key once. requests recomputes it on every call, with
    an `os.path.isdir` of the CA bundle path: a stat per order, under the GIL, in the profile."""

    def __init__(self) -> None:
        super().__init__()
        self._pool_keys: dict[tuple[str, Any, Any], tuple[_HostParams, _PoolKwargs]] = {}

    def build_connection_pool_key_attributes(
        self, request: PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[_HostParams, _PoolKwargs]:
        parts = urlsplit(request.url or "")
        key = (f"{parts.scheme}://{parts.netloc}", verify, cert)
        cached = self._pool_keys.get(key)
        if cached is None:
            cached = super().build_connection_pool_key_attributes(request, verify, cert)
            self._pool_keys[key] = cached
        host_params, pool_kwargs = cached
        return host_params.copy(), pool_kwargs.copy()  # callers may change them


class _TimeoutSession(requests.Session):
    """A session whose requests time out (alpaca-py passes no timeout at all).

    What requests reads from the environment on every call (proxies, CA bundle, netrc) is read
    once, for the account's base URL, when the session is made: the same settings, without an
    environment scan and two file-system lookups per order."""

    def __init__(self, timeout: float, base_url: str) -> None:
        super().__init__()
        self._timeout = timeout
        settings = self.merge_environment_settings(base_url, {}, None, None, None)
        self.proxies = settings["proxies"]
        self.verify = settings["verify"]
        self.cert = settings["cert"]
        self.auth = get_netrc_auth(base_url)
        self.trust_env = False
        adapter = _PoolKeyCachingAdapter()
        self.mount("https://", adapter)
        self.mount("http://", adapter)

    def request(self, method: Any, url: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().request(method, url, *args, **kwargs)


def make_trading_client(account: Account, timeout: float) -> TradingClient:
    client = TradingClient(
        api_key=account.api_key.get_secret_value(),
        secret_key=account.secret_key.get_secret_value(),
        paper=account.mode is AccountMode.paper,
        raw_data=True,
        url_override=account.base_url,
    )
    # Our session (timeouts) and no retries of alpaca-py's own: see streams.compat.
    configure_rest_client(client, _TimeoutSession(timeout, rest_base_url(client)))
    return client


class Transport(Protocol):
    """One account's REST I/O: `request("GET", "/account")` answers as alpaca-py's
    `TradingClient.get("/account")` with `raw_data=True`, raising what it raises."""

    async def request(
        self, method: str, path: str, data: Mapping[str, Any] | None = None
    ) -> Any: ...

    async def close(self) -> None: ...


class ThreadedTransport:
    """alpaca-py's blocking client, each call in the account's own thread pool."""

    _METHODS = ("GET", "POST", "PATCH", "DELETE")

    def __init__(self, client: TradingClient, max_workers: int, timeout: float, label: str):
        self._client = client
        self._timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix=f"broker-{label}")
        self._calls = {m: getattr(client, m.lower()) for m in self._METHODS}

    async def request(self, method: str, path: str, data: Mapping[str, Any] | None = None) -> Any:
        loop = asyncio.get_running_loop()
        # The socket timeout normally fires first (a clean `timeout`); the backstop.
        return await asyncio.wait_for(
            loop.run_in_executor(self._executor, self._calls[method], path, data),
            self._timeout + 1.0,
        )

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        close_rest_client(self._client)


class AiohttpTransport:
    """The same requests over the account's aiohttp session, each bounded by the timeout."""

    def __init__(self, http: AlpacaHttp, timeout: float) -> None:
        self._http = http
        self._timeout = timeout

    async def request(self, method: str, path: str, data: Mapping[str, Any] | None = None) -> Any:
        async with asyncio.timeout(self._timeout):
            return await self._http.request(method, path, data)

    async def close(self) -> None:
        await self._http.close()


def make_transport(
    account: Account,
    *,
    timeout: float,
    max_workers: int,
    http: BrokerHttpClient,
    tls: TlsContexts | None = None,
) -> Transport:
    client = make_trading_client(account, timeout)
    if http is BrokerHttpClient.alpaca_py:
        return ThreadedTransport(client, max_workers, timeout, account.label)
    base_url, headers = rest_request_defaults(client)
    close_rest_client(client)  # only its URL and headers are used
    return AiohttpTransport(
        AlpacaHttp(
            base_url,
            headers,
            pool_size=max_workers,
            environment=HttpEnvironment.for_url(rest_base_url(client)),
            tls=tls,
        ),
        timeout,
    )


class AlpacaBroker:
    """The broker calls of one account lane, async and classified (`BrokerError`)."""

    def __init__(
        self,
        account: Account,
        *,
        timeout_seconds: float,
        rate_limit_per_minute: int,
        max_workers: int = 4,
        max_token_wait: float = 0.5,
        call_slots: asyncio.Semaphore | None = None,
        http: BrokerHttpClient = BrokerHttpClient.aiohttp,
        tls: TlsContexts | None = None,
    ) -> None:
        # The account's own share of the call slots: one per thread or pooled connection.
        self._own_slots = asyncio.Semaphore(max_workers)
        self.label = account.label
        self._timeout = timeout_seconds
        self._transport: Transport = make_transport(
            account, timeout=timeout_seconds, max_workers=max_workers, http=http, tls=tls
        )
        self._bucket = TokenBucket(rate_limit_per_minute)
        self._max_token_wait = max_token_wait
        self._slots = call_slots
        self._timers: dict[str, Any] = {}

    async def _take_token(self) -> None:
        wait = self._bucket.try_acquire()
        if wait == 0.0:
            return
        if wait > self._max_token_wait:
            raise BrokerError(ErrorClass.rate_limit, message="local request budget exhausted")
        await asyncio.sleep(wait)
        if self._bucket.try_acquire() != 0.0:
            raise BrokerError(ErrorClass.rate_limit, message="local request budget exhausted")

    async def _take_slot(self) -> None:
        """The account's own slot, then a shared one, both within the call's timeout."""
        own = self._own_slots
        if own.locked():
            try:
                await asyncio.wait_for(own.acquire(), self._timeout)
            except TimeoutError:
                raise BrokerError(
                    ErrorClass.rate_limit, message="no broker call slot of the account free in time"
                ) from None
        else:
            await own.acquire()  # free: taken at once
        shared = self._slots
        if shared is None:
            return
        if not shared.locked():
            await shared.acquire()
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        try:
            await asyncio.wait_for(shared.acquire(), max(0.0, deadline - loop.time()))
        except BaseException as exc:
            own.release()
            if isinstance(exc, TimeoutError):
                raise BrokerError(
                    ErrorClass.rate_limit, message="no broker call slot free in time"
                ) from None
            raise

    def _release_slot(self) -> None:
        if self._slots is not None:
            self._slots.release()
        self._own_slots.release()

    async def _call(
        self, call: str, method: str, path: str, data: Mapping[str, Any] | None = None
    ) -> Any:
        await self._take_token()
        await self._take_slot()
        timer = self._timers.get(call)
        if timer is None:
            timer = self._timers[call] = broker_call_timer(self.label, call)
        try:
            with timer.time():
                try:
                    return await self._transport.request(method, path, data)
                except Exception as exc:  # noqa: BLE001 - every failure becomes a BrokerError
                    raise classify(exc) from None
        finally:
            self._release_slot()

    # ---- orders
    async def submit_order(self, plan: OrderPlan) -> Order:
        """POST the order. A 422 that is a duplicate client order id returns the existing order."""
        request = MarketOrderRequest(
            symbol=plan.symbol,
            qty=float(plan.qty),
            side=OrderSide(plan.side.value),
            time_in_force=TimeInForce(plan.time_in_force),
            client_order_id=plan.client_order_id,
        )
        try:
            # What `TradingClient.submit_order(request)` sends.
            answer: Order = await self._call(
                "submit_order", "POST", "/orders", request.to_request_fields()
            )
            return answer
        except BrokerError as exc:
            if exc.kind is not ErrorClass.duplicate:
                raise
            existing = await self.order_by_client_id(plan.client_order_id)
            if existing is None:  # 40010001 was a plain validation error, not a duplicate
                raise BrokerError(ErrorClass.rejected, exc.status, exc.code, exc.message) from None
            log.info(
                "order already existed at the broker (duplicate client_order_id)",
                extra={"account": self.label, "client_order_id": plan.client_order_id},
            )
            return existing

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        return await self._maybe(
            "get_order_by_client_id",
            "/orders:by_client_order_id",
            {"client_order_id": client_order_id},
        )

    async def order_by_id(self, order_id: str) -> Order | None:
        try:
            path = f"/orders/{validate_uuid_id_param(order_id, 'order_id')}"
        except ValueError as exc:  # as alpaca-py raises it, before any request
            raise classify(exc) from None
        return await self._maybe("get_order_by_id", path, {})

    async def _maybe(self, call: str, path: str, params: Mapping[str, Any]) -> Order | None:
        try:
            return dict(await self._call(call, "GET", path, params))
        except BrokerError as exc:
            if exc.kind is ErrorClass.not_found:
                return None
            raise

    async def list_orders(
        self, status: str = "open", after: datetime | None = None, limit: int = 500
    ) -> list[Order]:
        request = GetOrdersRequest(
            status=QueryOrderStatus(status), after=after, limit=limit, nested=False
        )
        orders = await self._call("get_orders", "GET", "/orders", request.to_request_fields())
        return [dict(o) for o in orders]

    async def cancel_open_orders(self) -> list[dict[str, Any]]:
        """DELETE /v2/orders (cancellation is asynchronous: `canceled` arrives on the stream)."""
        answers = await self._call("cancel_orders", "DELETE", "/orders")
        return [dict(a) for a in answers or []]

    async def close_all_positions(self) -> list[dict[str, Any]]:
        """DELETE /v2/positions?cancel_orders=true: cancel every open order, then one closing
        order per position. The answer is multi-status (207): one entry per position with its
        own `status` (200, or the refusal) and `body`."""
        answers = await self._call(
            "close_all_positions", "DELETE", "/positions", {"cancel_orders": True}
        )
        return [dict(a) for a in answers or []]

    async def set_suspend_trade(self, suspended: bool) -> dict[str, Any]:
        """PATCH /v2/account/configurations `{"suspend_trade": ...}`: the broker itself refuses
        new orders of this account while it is true. Only that field is sent (alpaca-py's
        `set_account_configurations` would write back every setting it read)."""
        body = {"suspend_trade": suspended}
        answer = await self._call("set_suspend_trade", "PATCH", "/account/configurations", body)
        return dict(answer or {})

    async def fill_activities(
        self, page_token: str | None = None, page_size: int = 100, direction: str = "asc"
    ) -> list[dict[str, Any]]:
        """`GET /v2/account/activities/FILL`: one page of fills after `page_token` (alpaca-py's
        TradingClient has no call for it: its public `get` on the same session)."""
        params: dict[str, Any] = {"direction": direction, "page_size": page_size}
        if page_token is not None:
            params["page_token"] = page_token
        rows = await self._call("get_fill_activities", "GET", "/account/activities/FILL", params)
        return [dict(r) for r in rows or []]

    # ---- account
    async def account(self) -> dict[str, Any]:
        return dict(await self._call("get_account", "GET", "/account"))

    async def positions(self) -> list[dict[str, Any]]:
        return [dict(p) for p in await self._call("get_all_positions", "GET", "/positions")]

    async def close(self) -> None:
        await self._transport.close()
