"""Broker error classes (status first, then code; the same for alpaca-py's `APIError` and the
aiohttp client's answers), the request budget, the call slots, and the alpaca-py internals the
threaded client relies on (no SDK retries, a socket timeout)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import requests
from alpaca.common.exceptions import APIError
from pydantic import SecretStr

from streams.broker.alpaca import make_trading_client
from streams.broker.errors import BrokerError, ErrorClass, classify, from_response
from streams.broker.ratelimit import TokenBucket
from streams.domain.accounts import Account, AccountMode


class _Response:
    def __init__(self, status: int) -> None:
        self.status_code = status


class _HTTPError:
    def __init__(self, status: int) -> None:
        self.response = _Response(status)


def api_error(status: int, body: str) -> APIError:
    return APIError(body, _HTTPError(status))


@pytest.mark.parametrize(
    ("status", "body", "kind", "ambiguous"),
    [
        (401, '{"message":"unauthorized."}', ErrorClass.auth, False),
        (
            403,
            '{"code":40310000,"message":"insufficient buying power"}',
            ErrorClass.insufficient,
            False,
        ),
        (403, '{"message":"forbidden"}', ErrorClass.forbidden, False),
        (404, '{"code":40410000,"message":"order not found"}', ErrorClass.not_found, False),
        (
            422,
            '{"code":40010001,"message":"client_order_id must be unique"}',
            ErrorClass.duplicate,
            False,
        ),
        (422, '{"code":42210000,"message":"asset not found"}', ErrorClass.rejected, False),
        (429, '{"code":42910000,"message":"rate limit"}', ErrorClass.rate_limit, False),
        (500, '{"code":50010000,"message":"internal"}', ErrorClass.server, True),
        (504, "<html>Gateway Time-out</html>", ErrorClass.gateway_timeout, True),
    ],
)
def test_http_errors(status: int, body: str, kind: ErrorClass, ambiguous: bool) -> None:
    error = classify(api_error(status, body))
    assert (error.kind, error.ambiguous, error.status) == (kind, ambiguous, status)


def test_rejection_reasons() -> None:
    assert classify(api_error(401, "")).rejection_reason == "broker_unauthorized"
    bp = classify(api_error(403, '{"code":40310000,"message":"bp"}'))
    assert bp.rejection_reason == "broker_rejected:40310000"
    assert classify(api_error(400, "nope")).rejection_reason == "broker_rejected:400"


def test_transport_errors_are_ambiguous() -> None:
    for exc in (TimeoutError(), requests.ReadTimeout(), requests.ConnectionError()):
        assert classify(exc).ambiguous
    assert classify(ValueError("x")).kind is ErrorClass.unknown
    error = BrokerError(ErrorClass.timeout, message="ReadTimeout")
    assert classify(error) is error and str(error) == "timeout: ReadTimeout"


def test_token_bucket_stays_under_the_minute_budget() -> None:
    now = [0.0]
    bucket = TokenBucket(190, clock=lambda: now[0])
    taken = 0
    for _ in range(60 * 100):  # a minute, asking every 10 ms
        if bucket.try_acquire() == 0.0:
            taken += 1
        now[0] += 0.01
    assert taken < 200
    assert bucket.try_acquire() > 0.0


def test_client_has_no_sdk_retry_and_a_timeout() -> None:
    account = Account(
        label="alpha",
        mode=AccountMode.live,
        api_key=SecretStr("k"),
        secret_key=SecretStr("s"),
        base_url="http://127.0.0.1:9",
    )
    client = make_trading_client(account, timeout=1.5)
    assert client._retry == 0 and client._retry_codes == []
    assert client._base_url == "http://127.0.0.1:9"
    assert client._sandbox is False  # live from the account's own mode
    assert client._use_raw_data is True
    assert client._session._timeout == 1.5


class _HangingTransport:
    """A transport whose calls wait on an event (the account's broker hangs)."""

    def __init__(self, release: asyncio.Event | None) -> None:
        self.release = release

    async def request(self, method: str, path: str, data: Any = None) -> Any:
        if self.release is not None:
            await self.release.wait()
        return {"ok": True}

    async def close(self) -> None:
        pass


async def test_a_hanging_account_holds_at_most_its_own_share_of_the_call_slots() -> None:
    from streams.broker.alpaca import AlpacaBroker
    from tests.unit.execution.fakes import account

    shared = asyncio.Semaphore(16)
    release = asyncio.Event()
    hanging = AlpacaBroker(
        account("beta"), timeout_seconds=0.5, rate_limit_per_minute=6000, call_slots=shared
    )
    healthy = AlpacaBroker(
        account("alpha"), timeout_seconds=0.5, rate_limit_per_minute=6000, call_slots=shared
    )
    hanging._transport = _HangingTransport(release)
    healthy._transport = _HangingTransport(None)
    try:
        calls = [asyncio.create_task(hanging.account()) for _ in range(12)]
        await asyncio.sleep(0.05)
        assert 16 - shared._value == 4  # beta's 12 calls hold only its own 4 slots
        assert await healthy.account() == {"ok": True}
        release.set()
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert shared._value == 16  # every slot given back
        # released within the timeout: the 8 waiting calls got beta's slots in turn
        assert results == [{"ok": True}] * 12
    finally:
        release.set()
        await hanging.close()
        await healthy.close()


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (aiohttp.ServerTimeoutError("read"), ErrorClass.timeout),
        (aiohttp.ConnectionTimeoutError("connect"), ErrorClass.timeout),
        (aiohttp.ServerDisconnectedError(), ErrorClass.connection),
        (aiohttp.ClientOSError(104, "reset"), ErrorClass.connection),
        (aiohttp.ClientPayloadError("truncated"), ErrorClass.unknown),
        (json.JSONDecodeError("x", "doc", 0), ErrorClass.unknown),
    ],
)
def test_aiohttp_transport_errors(exc: BaseException, kind: ErrorClass) -> None:
    error = classify(exc)
    assert error.kind is kind and error.ambiguous
    assert error.message == type(exc).__name__  # the type, never the exception's text


@pytest.mark.parametrize(
    ("status", "body", "kind", "code", "message"),
    [
        (401, b'{"message":"unauthorized."}', ErrorClass.auth, None, "unauthorized."),
        (403, b'{"code":40310000,"message":"bp"}', ErrorClass.insufficient, 40310000, "bp"),
        (422, b'{"code":40010001,"message":"dup"}', ErrorClass.duplicate, 40010001, "dup"),
        (429, b"", ErrorClass.rate_limit, None, "HTTP 429"),
        (504, b"<html>Gateway Time-out</html>", ErrorClass.gateway_timeout, None, "HTTP 504"),
        (503, b'["not", "an object"]', ErrorClass.server, None, "HTTP 503"),
    ],
)
def test_http_answers_classified_like_api_errors(
    status: int, body: bytes, kind: ErrorClass, code: int | None, message: str
) -> None:
    error = from_response(status, body)
    assert (error.kind, error.status, error.code, error.message) == (kind, status, code, message)
    old = classify(api_error(status, body.decode()))  # what the alpaca-py path gives
    assert (old.kind, old.status, old.code, old.message) == (kind, status, code, message)


def test_an_error_message_is_scrubbed_and_short() -> None:
    body = json.dumps({"message": "bad APCA-API-SECRET-KEY: s3cr3t-value " + "x" * 500})
    error = from_response(400, body.encode())
    assert "s3cr3t-value" not in str(error) and len(error.message) <= 200
