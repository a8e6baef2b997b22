"""Both broker HTTP clients (aiohttp, alpaca-py's in threads) against the simulator over real HTTP:
the same answers, the same error classes for every fault, and never a secret in an error's text,
traceback or log line. Needs no stack (the simulator runs in-process)."""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.decision import Action
from simulator.testing import RunningSimulator
from streams.broker.alpaca import AlpacaBroker
from streams.broker.errors import BrokerError, ErrorClass
from streams.domain import secrets
from streams.domain.accounts import Account, AccountMode
from streams.domain.sizing import OrderPlan
from streams.settings import BrokerHttpClient

SECRETS = {"alpha": "SK-alpha-4f9d2e7c1b", "small": "SK-small-8a3c5e1f0d"}
ACCOUNTS: dict[str, Any] = {
    "accounts": [
        {"label": "alpha", "key": "AK-alpha", "secret": SECRETS["alpha"]},
        {"label": "small", "key": "AK-small", "secret": SECRETS["small"], "cash": "1000"},
    ]
}


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with RunningSimulator(ACCOUNTS, seed=11) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(sim: RunningSimulator) -> None:
    sim.admin.reset()
    sim.admin.set_prices({"AAPL": "100"})


@pytest.fixture(params=list(BrokerHttpClient), ids=lambda c: c.value)
def http(request: pytest.FixtureRequest) -> BrokerHttpClient:
    client: BrokerHttpClient = request.param
    return client


def account(label: str, base_url: str, secret: str | None = None) -> Account:
    return Account(
        label=label,
        mode=AccountMode.paper,
        api_key=SecretStr(f"AK-{label}"),
        secret_key=SecretStr(secret or SECRETS[label]),
        base_url=base_url,
    )


@pytest.fixture
async def make(http: BrokerHttpClient, caplog: pytest.LogCaptureFixture) -> AsyncIterator[Any]:
    caplog.set_level(logging.DEBUG)
    made: list[AlpacaBroker] = []

    def build(acct: Account, timeout: float = 2.0) -> AlpacaBroker:
        broker = AlpacaBroker(acct, timeout_seconds=timeout, rate_limit_per_minute=6000, http=http)
        made.append(broker)
        return broker

    yield build
    for broker in made:
        await broker.close()


def plan(qty: str = "1", symbol: str = "AAPL") -> OrderPlan:
    return OrderPlan(
        client_order_id=f"it-{uuid.uuid4().hex}",
        symbol=symbol,
        side=Action.buy,
        qty=Decimal(qty),
        time_in_force="day",
        price=Decimal("100"),
    )


def assert_no_secret(error: BaseException, caplog: pytest.LogCaptureFixture) -> None:
    texts = [
        str(error),
        repr(error),
        repr(error.args),
        "".join(traceback.format_exception(error)),
        caplog.text,
    ]
    for secret in SECRETS.values():
        for text in texts:
            assert secret not in text


async def failure(call: Any) -> BrokerError:
    with pytest.raises(BrokerError) as caught:
        await call
    return caught.value


async def test_answers_are_alpaca_py_raw_dicts(sim: RunningSimulator, make: Any) -> None:
    broker = make(account("alpha", sim.url))
    sent = plan("2")
    order = await broker.submit_order(sent)
    assert order["client_order_id"] == sent.client_order_id and order["qty"] == "2"
    assert await broker.order_by_client_id(sent.client_order_id) == await broker.order_by_id(
        order["id"]
    )
    assert (await broker.order_by_id(order["id"]) or {})["id"] == order["id"]
    acct = await broker.account()
    assert isinstance(acct["cash"], str) and Decimal(acct["cash"]) > 0  # money as strings
    assert isinstance(await broker.positions(), list)
    assert await broker.order_by_id(str(uuid.uuid4())) is None  # 404
    assert await broker.order_by_client_id("never-sent") is None
    # the 422 duplicate client_order_id is answered by the order that exists
    again = await broker.submit_order(sent)
    assert again["id"] == order["id"]
    assert len(sim.admin.orders("alpha")) == 1
    assert [o["id"] for o in await broker.list_orders("all")] == [order["id"]]


@pytest.mark.parametrize(
    ("faults", "kind", "status", "landed"),
    [
        ({"http_5xx": 1}, ErrorClass.server, 500, False),
        ({"http_5xx": 1, "http_5xx_status": 503}, ErrorClass.server, 503, False),
        ({"post_504_after_accept": 1}, ErrorClass.gateway_timeout, 504, True),
        ({"force_429": 1}, ErrorClass.rate_limit, 429, False),
        ({"hang_next": 1}, ErrorClass.timeout, None, False),
        ({"hang_after_accept": 1}, ErrorClass.timeout, None, True),
    ],
)
async def test_faults_classified_and_the_order_found_when_it_landed(
    sim: RunningSimulator,
    make: Any,
    caplog: pytest.LogCaptureFixture,
    faults: dict[str, Any],
    kind: ErrorClass,
    status: int | None,
    landed: bool,
) -> None:
    broker = make(account("alpha", sim.url), timeout=0.5)
    sim.admin.set_faults("alpha", {**faults, "methods": ["POST"]})
    sent = plan()
    error = await failure(broker.submit_order(sent))
    assert (error.kind, error.status) == (kind, status)
    assert error.ambiguous is (kind is not ErrorClass.rate_limit)
    assert_no_secret(error, caplog)
    found = await broker.order_by_client_id(sent.client_order_id)
    assert (found is not None) is landed
    # the connection pool is usable after the failure
    assert (await broker.account())["status"] == "ACTIVE"


async def test_refusals(sim: RunningSimulator, make: Any, caplog: pytest.LogCaptureFixture) -> None:
    wrong = make(account("alpha", sim.url, secret="SK-alpha-wrong"))
    error = await failure(wrong.submit_order(plan()))
    assert (error.kind, error.status, error.ambiguous) == (ErrorClass.auth, 401, False)
    assert error.rejection_reason == "broker_unauthorized"
    assert_no_secret(error, caplog)

    small = make(account("small", sim.url))
    error = await failure(small.submit_order(plan("1000")))  # $100,000 with $1,000 of cash
    assert (error.kind, error.status, error.code) == (ErrorClass.insufficient, 403, 40310000)
    assert_no_secret(error, caplog)

    error = await failure(small.submit_order(plan("1", symbol="NOSUCH")))
    assert (error.kind, error.status, error.ambiguous) == (ErrorClass.rejected, 422, False)
    assert_no_secret(error, caplog)
    assert sim.admin.orders("small") == []


async def test_connection_refused(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: nothing listens
    broker = make(account("alpha", f"http://127.0.0.1:{port}"))
    error = await failure(broker.submit_order(plan()))
    assert error.kind is ErrorClass.connection and error.ambiguous
    assert_no_secret(error, caplog)


async def test_connection_dropped_mid_request(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's head arrived: hang up
        writer.transport.abort()

    server = await asyncio.start_server(drop, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        broker = make(account("alpha", f"http://127.0.0.1:{port}"))
        error = await failure(broker.submit_order(plan()))
        assert error.kind is ErrorClass.connection and error.ambiguous
        assert_no_secret(error, caplog)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_secret_echoed_by_the_broker_is_scrubbed(
    make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    secrets.register(SECRETS["alpha"])  # as the account registry registers every account secret

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        secret = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("apca-api-secret-key")
        )
        body = f'{{"code":40010000,"message":"bad key {secret}"}}'.encode()
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        broker = make(account("alpha", f"http://127.0.0.1:{port}"))
        error = await failure(broker.account())
        assert (error.kind, error.status, error.code) == (ErrorClass.rejected, 400, 40010000)
        assert error.message.startswith("bad key ")
        assert_no_secret(error, caplog)
    finally:
        server.close()
        await server.wait_closed()


async def test_a_request_is_never_resent(make: Any, caplog: pytest.LogCaptureFixture) -> None:
    """A kept-alive connection closed by the broker after reading the next request: that
    request fails as a connection error (ambiguous), it is not sent again on a new connection."""
    heads: list[str] = []

    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                heads.append((await reader.readuntil(b"\r\n\r\n")).decode())
            except asyncio.IncompleteReadError:
                return
            if len(heads) > 1:
                writer.transport.abort()  # read it, then hang up without an answer
                return
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: 2\r\n\r\n[]")
            await writer.drain()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        broker = make(account("alpha", f"http://127.0.0.1:{port}"))
        assert await broker.positions() == []
        error = await failure(broker.close_all_positions())  # DELETE: idempotent to aiohttp
        assert error.kind is ErrorClass.connection and error.ambiguous
        assert [h.split(" ", 2)[:2] for h in heads] == [
            ["GET", "/v2/positions"],
            ["DELETE", "/v2/positions?cancel_orders=True"],
        ]
        assert_no_secret(error, caplog)
    finally:
        server.close()
        await server.wait_closed()
