"""The aiohttp broker client sends exactly what alpaca-py's `TradingClient` sends (URL, query,
body, headers), and reads the environment as the requests session did. No network: alpaca-py's
requests are recorded by a stand-in session and prepared by requests itself."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import certifi
import pytest
import requests
from alpaca.trading.enums import OrderSide, QueryOrderStatus, TimeInForce
from alpaca.trading.requests import GetOrdersRequest, MarketOrderRequest
from pydantic import SecretStr
from yarl import URL

from schemas.decision import Action
from streams.broker.alpaca import AiohttpTransport, AlpacaBroker, make_trading_client
from streams.broker.http import AlpacaHttp, HttpEnvironment, query_string
from streams.compat import configure_rest_client, rest_request_defaults
from streams.domain.accounts import Account, AccountMode
from streams.domain.sizing import OrderPlan

Sent = tuple[str, str, bytes | None, dict[str, str]]


class _Recorder:
    """Stands in for alpaca-py's `requests.Session`: prepares each request with requests."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []
        self.answer = b"{}"

    def request(self, method: str, url: str, **opts: Any) -> requests.Response:
        prepared = requests.Request(
            method, url, headers=opts["headers"], params=opts.get("params"), json=opts.get("json")
        ).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        headers = {k: v for k, v in prepared.headers.items() if k != "Content-Length"}
        self.sent.append((method, str(prepared.url), body, headers))
        response = requests.Response()
        response.status_code = 200
        response._content = self.answer
        response.encoding = "utf-8"
        return response


class _RecordingHttp(AlpacaHttp):
    def __init__(self, base_url: str, headers: Mapping[str, str]) -> None:
        super().__init__(base_url, headers, pool_size=1, environment=HttpEnvironment())
        self.sent: list[Sent] = []
        self.answer: Any = {}

    async def request(self, method: str, path: str, data: Mapping[str, Any] | None = None) -> Any:
        url, body = self.prepare(method, path, data)
        headers = self.headers | ({"Content-Type": "application/json"} if body else {})
        self.sent.append((method, str(URL(url, encoded=True)), body, headers))
        return self.answer


def _account(base_url: str, mode: AccountMode = AccountMode.paper) -> Account:
    return Account(
        label="alpha",
        mode=mode,
        api_key=SecretStr("AKID-unit-123456"),
        secret_key=SecretStr("SECRET-unit-abcdef"),
        base_url=base_url,
    )


def _plan(client_order_id: str = "alpha-3f2a-0") -> OrderPlan:
    return OrderPlan(
        symbol="AAPL",
        side=Action.buy,
        qty=Decimal("3"),
        time_in_force="day",
        client_order_id=client_order_id,
        price=Decimal("100"),
    )


ORDER_ID = str(uuid.UUID("6f1c0c0e-8c51-4a8e-9a11-2a3b4c5d6e7f"))
AFTER = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)

# (our call, what alpaca-py's TradingClient is asked for the same thing, the answer's JSON)
CASES: list[tuple[str, Callable[[AlpacaBroker], Awaitable[Any]], Callable[[Any], Any], bytes]] = [
    (
        "submit_order",
        lambda b: b.submit_order(_plan()),
        lambda c: c.submit_order(
            MarketOrderRequest(
                symbol="AAPL",
                qty=3.0,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                client_order_id="alpha-3f2a-0",
            )
        ),
        b"{}",
    ),
    (
        "order_by_client_id",
        lambda b: b.order_by_client_id("alpha-3f2a-0 &+/é"),
        lambda c: c.get_order_by_client_id("alpha-3f2a-0 &+/é"),
        b"{}",
    ),
    (
        "order_by_id",
        lambda b: b.order_by_id(ORDER_ID.upper()),
        lambda c: c.get_order_by_id(ORDER_ID.upper()),
        b"{}",
    ),
    ("account", lambda b: b.account(), lambda c: c.get_account(), b"{}"),
    ("positions", lambda b: b.positions(), lambda c: c.get_all_positions(), b"[]"),
    (
        "list_orders",
        lambda b: b.list_orders("closed", AFTER, 500),
        lambda c: c.get_orders(
            GetOrdersRequest(status=QueryOrderStatus.CLOSED, after=AFTER, limit=500, nested=False)
        ),
        b"[]",
    ),
    ("cancel_open_orders", lambda b: b.cancel_open_orders(), lambda c: c.cancel_orders(), b"[]"),
    (
        "close_all_positions",
        lambda b: b.close_all_positions(),
        lambda c: c.close_all_positions(cancel_orders=True),
        b"[]",
    ),
    (
        "set_suspend_trade",
        lambda b: b.set_suspend_trade(True),
        lambda c: c.patch("/account/configurations", {"suspend_trade": True}),
        b"{}",
    ),
    (
        "fill_activities",
        lambda b: b.fill_activities("tok/1", 50, "desc"),
        lambda c: c.get(
            "/account/activities/FILL",
            {"direction": "desc", "page_size": 50, "page_token": "tok/1"},
        ),
        b"[]",
    ),
]


@pytest.mark.parametrize(
    "base_url", ["http://127.0.0.1:8123", "https://paper-api.alpaca.markets"], ids=["sim", "paper"]
)
@pytest.mark.parametrize(("name", "ours", "theirs", "answer"), CASES, ids=[c[0] for c in CASES])
async def test_each_call_sends_what_alpaca_py_sends(
    base_url: str,
    name: str,
    ours: Callable[[AlpacaBroker], Awaitable[Any]],
    theirs: Callable[[Any], Any],
    answer: bytes,
) -> None:
    account = _account(base_url)
    client = make_trading_client(account, timeout=1.0)
    recorder = _Recorder()
    recorder.answer = answer
    configure_rest_client(client, recorder)
    theirs(client)

    broker = AlpacaBroker(account, timeout_seconds=1.0, rate_limit_per_minute=6000)
    http = _RecordingHttp(*rest_request_defaults(client))
    http.answer = [] if answer == b"[]" else {}
    broker._transport = AiohttpTransport(http, 1.0)
    await ours(broker)

    assert http.sent == recorder.sent
    _, url, _, headers = http.sent[0]
    assert url.startswith(f"{base_url}/v2/")
    assert headers["APCA-API-KEY-ID"] == "AKID-unit-123456"
    assert headers["User-Agent"].startswith("APCA-PY/")


def test_the_order_body_is_alpaca_pys_model_encoded_as_requests_encodes_json() -> None:
    http = _RecordingHttp("http://h/v2", {})
    fields = MarketOrderRequest(
        symbol="BTC/USD",
        qty=0.123456,
        side=OrderSide.SELL,
        time_in_force=TimeInForce.GTC,
        client_order_id="c-1",
    ).to_request_fields()
    url, body = http.prepare("POST", "/orders", fields)
    assert url == "http://h/v2/orders"
    assert body == (
        b'{"symbol": "BTC/USD", "qty": 0.123456, "side": "sell", "type": "market", '
        b'"time_in_force": "gtc", "client_order_id": "c-1"}'
    )
    assert http.prepare("GET", "/account") == ("http://h/v2/account", None)
    assert http.prepare("GET", "/orders/x", {}) == ("http://h/v2/orders/x", None)


def test_query_strings_as_requests_encodes_params() -> None:
    params = {"a": None, "b": False, "c": ["x", "y z"], "d": "é&=", "e": 5}
    assert query_string(params) == "b=False&c=x&c=y+z&d=%C3%A9%26%3D&e=5"
    prepared = requests.Request("GET", "http://h/p", params=params).prepare()
    assert prepared.url == f"http://h/p?{query_string(params)}"
    assert query_string(None) == query_string({}) == ""


def test_order_by_id_refuses_a_non_uuid_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from streams.broker.errors import BrokerError, ErrorClass

    broker = AlpacaBroker(
        _account("http://127.0.0.1:9"), timeout_seconds=1, rate_limit_per_minute=60
    )
    http = _RecordingHttp("http://127.0.0.1:9/v2", {})
    broker._transport = AiohttpTransport(http, 1.0)
    with pytest.raises(BrokerError) as caught:
        asyncio.run(broker.order_by_id("not-a-uuid"))
    assert caught.value.kind is ErrorClass.unknown and http.sent == []


# ---------------------------------------------------------------- environment, read once


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
        "no_proxy",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "absent-netrc"))
    return monkeypatch


def test_environment_defaults(clean_env: pytest.MonkeyPatch) -> None:
    env = HttpEnvironment.for_url("https://api.alpaca.markets")
    assert env == HttpEnvironment(proxy=None, verify=True, netrc_auth=None)
    context = env.ssl_context()  # certifi's bundle, as requests verifies
    assert context.verify_mode.name == "CERT_REQUIRED" and context.check_hostname
    assert certifi.where()


def test_environment_proxy_ca_bundle_and_netrc(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    clean_env.setenv("NO_PROXY", "broker.internal")
    clean_env.setenv("REQUESTS_CA_BUNDLE", certifi.where())
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.alpaca.markets login u password p\n")
    netrc.chmod(0o600)
    clean_env.setenv("NETRC", str(netrc))
    env = HttpEnvironment.for_url("https://api.alpaca.markets")
    assert env == HttpEnvironment(
        proxy="http://proxy.internal:3128", verify=certifi.where(), netrc_auth=("u", "p")
    )
    # NO_PROXY excludes the host, as requests does
    assert HttpEnvironment.for_url("https://broker.internal").proxy is None


def test_a_socks_proxy_is_refused_with_a_clear_error(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "socks5://proxy.internal:1080")
    with pytest.raises(ValueError, match="TORGHUT_BROKER_HTTP=alpaca-py"):
        HttpEnvironment.for_url("https://api.alpaca.markets")
