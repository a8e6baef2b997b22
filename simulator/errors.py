"""Alpaca error answers: HTTP status plus the numeric code alpaca-py shows as ``APIError.code``."""

from __future__ import annotations

from typing import Any

INVALID_REQUEST = 40010001  # malformed field, duplicate client_order_id
BAD_BODY = 40010000  # body is not JSON
FORBIDDEN = 40310000  # insufficient buying power or qty, shorting not allowed, suspended
PATTERN_DAY_TRADER = 40310100  # a 4th day trade in 5 business days under $25k equity
NOT_FOUND = 40410000
UNPROCESSABLE = 42210000  # unknown symbol, unsupported order, not cancelable
RATE_LIMITED = 42910000
INTERNAL = 50010000


class ApiError(Exception):
    """An error the REST layer turns into ``{"code": ..., "message": ...}`` with ``status``."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        if self.code is None:
            return {"message": self.message}
        return {"code": self.code, "message": self.message}


def invalid(message: str) -> ApiError:
    return ApiError(422, INVALID_REQUEST, message)


def unprocessable(message: str) -> ApiError:
    return ApiError(422, UNPROCESSABLE, message)


def forbidden(message: str) -> ApiError:
    return ApiError(403, FORBIDDEN, message)


def pattern_day_trader() -> ApiError:
    return ApiError(403, PATTERN_DAY_TRADER, "trade denied due to pattern day trading protection")


def not_found(message: str = "order not found") -> ApiError:
    return ApiError(404, NOT_FOUND, message)
