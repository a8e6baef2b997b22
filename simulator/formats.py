"""Wire formats shared by REST and the stream: decimals and timestamps as Alpaca sends them."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache

# Alpaca accepts at most 9 decimal places for quantities and notionals.
QTY_QUANTUM = Decimal("0.000000001")
# Derived prices (averages) are rounded like Alpaca's, which never shows more than 9 places either.
PRICE_QUANTUM = Decimal("0.000000001")


def to_decimal(value: object, field: str = "value") -> Decimal:
    """Parse a JSON number or string into a Decimal.

    Floats go through ``str`` so that ``1.0`` from alpaca-py becomes ``Decimal("1.0")``, not the
    binary expansion of the float.
    """
    if isinstance(value, bool):
        raise ValueError(f"{field} must be a number")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, (int, float, str)):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise ValueError(f"{field} is not a valid number: {value!r}") from None
    else:
        raise ValueError(f"{field} must be a number")
    if not result.is_finite():
        raise ValueError(f"{field} must be finite")
    return result


def fmt_decimal(value: Decimal) -> str:
    """Decimal string without exponent or trailing zeros ("100000", "187.42", "0.9975")."""
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def opt_decimal(value: Decimal | None) -> str | None:
    return None if value is None else fmt_decimal(value)


@lru_cache(maxsize=8192)
def fmt_ts(value: datetime) -> str:
    """RFC 3339 UTC with microseconds, the form Alpaca uses for order timestamps.

    Cached: an order's timestamps are formatted again for every snapshot and event.
    """
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def opt_ts(value: datetime | None) -> str | None:
    return None if value is None else fmt_ts(value)


def parse_ts(value: str) -> datetime:
    """Parse an RFC 3339 timestamp or a date (midnight UTC); naive values are taken as UTC."""
    text = value.strip()
    if len(text) == 10:
        d = date.fromisoformat(text)
        return datetime(d.year, d.month, d.day, tzinfo=UTC)
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
