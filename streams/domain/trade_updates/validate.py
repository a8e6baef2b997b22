"""Input integrity of trade updates: event-time bound, numeric validity, known account labels.

Every rule raises `InvalidTradeUpdate` with a machine `reason` (the dead letter's) and a message
naming the field, never its value (a record may carry anything):

- `event_time_in_future`: a broker time more than the allowed skew ahead of now. Such an event
  would otherwise become an execution's `last_event_ts` (GREATEST) and outrank every real one.
- `invalid_number`: NaN, ±infinity, a negative quantity or price, or a magnitude the Postgres
  columns (numeric(20, 8)) cannot hold. `position_qty` may be negative (a short position).
- `unknown_account`: a label that fails the label rule or is not an account of the registry
  (enabled or not); `account_label_conflict`: the event names two different accounts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

from schemas.common import LABEL_PATTERN
from schemas.trade_update import AlpacaOrder, TradeUpdateEnvelope
from streams.domain.trade_updates.model import TradeUpdate

# numeric(20, 8): 12 digits before the point.
MAX_MAGNITUDE = Decimal(10) ** 12


class InvalidTradeUpdate(ValueError):
    """A trade update that must not become state; `reason` is the dead letter's reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _check_number(field: str, value: Decimal | None, *, signed: bool = False) -> None:
    if value is None:
        return
    if not value.is_finite():
        raise InvalidTradeUpdate("invalid_number", f"{field}: not a finite number")
    if value < 0 and not signed:
        raise InvalidTradeUpdate("invalid_number", f"{field}: negative")
    if abs(value) >= MAX_MAGNITUDE:
        raise InvalidTradeUpdate("invalid_number", f"{field}: out of range")


def check_order_numbers(order: AlpacaOrder, prefix: str = "order") -> None:
    """The order's quantities and prices: finite, not negative, storable."""
    for name in ("qty", "notional", "filled_qty", "filled_avg_price", "limit_price", "stop_price"):
        _check_number(f"{prefix}.{name}", getattr(order, name))


def check_envelope_numbers(envelope: TradeUpdateEnvelope) -> None:
    payload = envelope.payload
    _check_number("payload.qty", payload.qty)
    _check_number("payload.price", payload.price)
    _check_number("payload.position_qty", payload.position_qty, signed=True)
    check_order_numbers(payload.order, "payload.order")


def _check_time(field: str, value: datetime | None, latest: datetime) -> None:
    if value is not None and value > latest:
        raise InvalidTradeUpdate(
            "event_time_in_future", f"{field}: more than the allowed skew in the future"
        )


def check_envelope_times(envelope: TradeUpdateEnvelope, now: datetime, skew: timedelta) -> None:
    """Every broker time that can become the event time (payload, order update, envelope)."""
    latest = now + skew
    _check_time("payload.timestamp", envelope.payload.timestamp, latest)
    _check_time("payload.order.updated_at", envelope.payload.order.updated_at, latest)
    _check_time("eventTs", envelope.event_ts, latest)


def check_envelope(envelope: TradeUpdateEnvelope, now: datetime, skew: timedelta) -> None:
    check_envelope_numbers(envelope)
    check_envelope_times(envelope, now, skew)


def _present(label: str | None) -> str | None:
    """A blank label is no evidence; any other is checked as it is (no trimming: `acct-a\n`
    is not `acct-a`)."""
    return label if label and label.strip() else None


def check_account(label: str, known: frozenset[str], where: str) -> str:
    """`label` when it passes the label rule and names an account of the registry."""
    if LABEL_PATTERN.fullmatch(label) is None:
        raise InvalidTradeUpdate("unknown_account", f"{where}: not a valid account label")
    if label not in known:
        raise InvalidTradeUpdate("unknown_account", f"{where}: not an account of the registry")
    return label


def declared_labels(envelope: TradeUpdateEnvelope) -> Iterable[tuple[str, str]]:
    """(field, label) of every label the event carries, in attribution precedence."""
    payload = envelope.payload
    for where, label in (
        ("payload.account_label", payload.account_label),
        ("payload.order.account_label", payload.order.account_label),
        ("accountLabel", envelope.account_label),
    ):
        cleaned = _present(label)
        if cleaned is not None:
            yield where, cleaned


def declared_account(
    envelope: TradeUpdateEnvelope, known: frozenset[str]
) -> tuple[str, str] | None:
    """(label, field) the event names itself, every named label checked; None for a v1 event.

    All labels present are checked, not only the first: an event naming two accounts is not
    evidence for either."""
    found = [
        (check_account(label, known, where), where) for where, label in declared_labels(envelope)
    ]
    if not found:
        return None
    if len({label for label, _ in found}) > 1:
        fields = ", ".join(where for _, where in found)
        raise InvalidTradeUpdate("account_label_conflict", f"{fields}: name different accounts")
    return found[0]


def check_update(
    update: TradeUpdate, known: frozenset[str], now: datetime, skew: timedelta
) -> None:
    """The same rules on a re-keyed record (the applier's guard: whoever wrote that topic)."""
    check_account(update.account_label, known, "account_label")
    for name in ("qty", "price", "order_qty", "filled_qty", "filled_avg_price"):
        _check_number(name, getattr(update, name))
    _check_number("position_qty", update.position_qty, signed=True)
    _check_time("event_ts", update.event_ts, now + skew)
