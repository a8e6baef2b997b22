"""Broker error classification: HTTP status first, Alpaca's body `code` second.

alpaca-py raises `APIError` for HTTP errors (its `.code`/`.message` re-parse the body and raise
when the body is not JSON, e.g. a 401 or a 504 HTML page) and lets `requests` exceptions through
raw; the aiohttp client (`streams/broker/http.py`) hands over the status and body of an HTTP error
(`from_response`) and lets aiohttp's exceptions through raw. Everything a broker call can raise
becomes one `BrokerError` with a class that says what the lane must do: reject the decision, look
the order up (the outcome is ambiguous), or back off. Only the body's `message` (scrubbed, cut
short) or an exception's type name ever reaches the text: never a header, URL or request.
"""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import Any

import aiohttp
import requests
from alpaca.common.exceptions import APIError

from streams.observability.scrub import scrub_text

CODE_INSUFFICIENT = 40310000  # 403: insufficient buying power / qty, shorting not allowed
CODE_INVALID = 40010001  # 422: invalid field, and also a duplicate client_order_id
_MAX_MESSAGE = 200


class ErrorClass(StrEnum):
    auth = "auth"  # 401: bad credentials; the whole lane is down
    forbidden = "forbidden"  # 403 other than buying power: the account may not do this
    insufficient = "insufficient"  # 403 40310000: this order is refused
    duplicate = "duplicate"  # 422 40010001: maybe a duplicate client_order_id (look it up)
    rejected = "rejected"  # other 4xx: this order is refused
    not_found = "not_found"  # 404
    rate_limit = "rate_limit"  # 429 (or our own bucket): nothing was created
    gateway_timeout = "gateway_timeout"  # 504: the order may exist
    server = "server"  # other 5xx: the order may exist
    timeout = "timeout"  # no answer in time: the order may exist
    connection = "connection"  # the connection failed or broke: the order may exist
    unknown = "unknown"  # anything else: treated as ambiguous


# After these a submitted order may or may not exist: look it up by client order id.
AMBIGUOUS = frozenset(
    {
        ErrorClass.gateway_timeout,
        ErrorClass.server,
        ErrorClass.timeout,
        ErrorClass.connection,
        ErrorClass.unknown,
    }
)


class BrokerError(Exception):
    """A failed broker call. `message` is scrubbed and short; it never holds a secret."""

    def __init__(
        self,
        kind: ErrorClass,
        status: int | None = None,
        code: int | None = None,
        message: str = "",
    ) -> None:
        super().__init__(kind, status, code, message)
        self.kind = kind
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        parts = [self.kind.value]
        if self.status is not None:
            parts.append(f"http {self.status}")
        if self.code is not None:
            parts.append(f"code {self.code}")
        if self.message:
            parts.append(self.message)
        return ": ".join(parts)

    @property
    def ambiguous(self) -> bool:
        return self.kind in AMBIGUOUS

    @property
    def rejection_reason(self) -> str:
        """The decision's rejection reason for a definitive refusal."""
        if self.kind is ErrorClass.auth:
            return "broker_unauthorized"
        detail = self.code if self.code is not None else self.status
        return f"broker_rejected:{detail if detail is not None else self.kind.value}"


def _body(raw: Any) -> dict[str, Any]:
    try:
        parsed = json.loads(raw) if isinstance(raw, str | bytes) else None
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _short(text: object) -> str:
    return scrub_text(str(text))[:_MAX_MESSAGE]


def classify_status(status: int, code: int | None) -> ErrorClass:
    if status == 401:
        return ErrorClass.auth
    if status == 403:
        return ErrorClass.insufficient if code == CODE_INSUFFICIENT else ErrorClass.forbidden
    if status == 404:
        return ErrorClass.not_found
    if status == 422 and code == CODE_INVALID:
        return ErrorClass.duplicate
    if status == 429:
        return ErrorClass.rate_limit
    if status == 504:
        return ErrorClass.gateway_timeout
    if status >= 500:
        return ErrorClass.server
    if 400 <= status < 500:
        return ErrorClass.rejected
    return ErrorClass.unknown


def from_response(status: int | None, raw: str | bytes | None) -> BrokerError:
    """The error of an HTTP answer >= 400: class from the status, then the body's `code`."""
    body = _body(raw)
    code = body.get("code")
    code = code if isinstance(code, int) else None
    message = body.get("message") or ("" if status is None else f"HTTP {status}")
    if not isinstance(status, int):
        return BrokerError(ErrorClass.unknown, None, code, _short(message))
    return BrokerError(classify_status(status, code), status, code, _short(message))


def _api_error(exc: APIError) -> BrokerError:
    # `.status_code` is safe; `.code`/`.message` raise on a non-JSON body, so parse it here.
    return from_response(exc.status_code, exc.args[0] if exc.args else None)


def classify(exc: BaseException) -> BrokerError:
    """One `BrokerError` for anything a broker call raised."""
    if isinstance(exc, BrokerError):
        return exc
    if isinstance(exc, APIError):
        return _api_error(exc)
    # aiohttp's ServerTimeoutError is both a TimeoutError and a connection error: a timeout.
    if isinstance(exc, asyncio.TimeoutError | requests.Timeout):
        return BrokerError(ErrorClass.timeout, message=type(exc).__name__)
    if isinstance(exc, requests.ConnectionError | ConnectionError | aiohttp.ClientConnectionError):
        return BrokerError(ErrorClass.connection, message=type(exc).__name__)
    return BrokerError(ErrorClass.unknown, message=type(exc).__name__)
