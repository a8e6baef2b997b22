"""Shared field types: UTC timestamps with millisecond precision and decimal money."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso_millis(value: datetime) -> str:
    """UTC ISO-8601 with exactly three fractional digits and a `Z`: the canonical form."""
    value = to_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


UtcDatetime = Annotated[
    datetime,
    AfterValidator(to_utc),
    PlainSerializer(iso_millis, return_type=str, when_used="json"),
]

Money = Annotated[
    Decimal,
    PlainSerializer(lambda d: format(d, "f"), return_type=str, when_used="json"),
]


LABEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
LABEL_RULE = "1-64 characters of a-z, 0-9, '_' or '-', starting with a letter or digit"


def check_label(value: str) -> str:
    """An account label: safe as a Kafka key, a metrics label, a Flipt entity id suffix
    (`torghut:<label>`) and a control-topic scope (where `*` means every account)."""
    if not isinstance(value, str) or LABEL_PATTERN.fullmatch(value) is None:
        raise ValueError(f"account label must be {LABEL_RULE}")
    return value


AccountLabel = Annotated[str, AfterValidator(check_label)]


def utc_now_millis() -> datetime:
    """Now, truncated to the millisecond precision the JSON form keeps (exact round trips)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)
