"""Fill replay: the broker's fill activities of one account, applied after a gap in its trade
updates (a forwarder reconnect, open orders with no event for a while, start-up reconciliation).

`GET /v2/account/activities/FILL` lists an account's executions oldest first after a page token
(the id of the last activity read). Each activity becomes a `TradeUpdate` of that account and goes
through the order feed's own path (`OrderFeedApplier.apply_updates`: checked, stored once,
folded in monotonically), so a replayed fill and its trade update can never both count: the
event is stored once per (account, broker execution id) (a unique index), and the apply folds the
order's *cumulative* fill, which is idempotent. An over-fill is refused there (see
`Repository._apply`). The page token is stored per account in Postgres (`broker_fill_cursors`)
after each page is applied, so a crash replays at most one page again (harmlessly).

The first time an account is seen there is no cursor: it starts at the newest activity (history
before this system tracked the account is not replayed), together with the position baseline.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pydantic import ValidationError

from streams.domain.order_state import event_fingerprint
from streams.domain.trade_updates.model import Attribution, TradeUpdate
from streams.persistence.rows import FillCursorRow

log = logging.getLogger(__name__)

SOURCE_TOPIC = "broker:activities/FILL"  # `source_topic` of replayed fills (not a Kafka topic)
FILL_TYPES = frozenset({"fill", "partial_fill"})
PAGE_SIZE = 100


class FillSource(Protocol):
    """One account's fill activities (`streams.broker.AlpacaBroker`); raises BrokerError."""

    async def fill_activities(
        self, page_token: str | None = None, page_size: int = PAGE_SIZE, direction: str = "asc"
    ) -> list[dict[str, Any]]: ...


class FillCursorStore(Protocol):
    async def fill_cursor(self, account: str) -> FillCursorRow | None: ...

    async def init_fill_cursor(
        self, account: str, page_token: str | None, baseline: Mapping[str, Decimal]
    ) -> FillCursorRow: ...

    async def advance_fill_cursor(self, account: str, page_token: str) -> None: ...


class ApplyUpdates(Protocol):
    async def __call__(self, updates: Sequence[TradeUpdate]) -> Any: ...


Baseline = Callable[[str], Awaitable[Mapping[str, Decimal]]]


class InvalidActivity(ValueError):
    """A fill activity that cannot be applied (named field); it is skipped and counted."""


def _decimal(activity: Mapping[str, Any], name: str, *, required: bool = True) -> Decimal | None:
    value = activity.get(name)
    if value is None or value == "":
        if required:
            raise InvalidActivity(f"fill activity without {name}")
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise InvalidActivity(f"fill activity {name} is not a number") from None
    if not number.is_finite() or number < 0:
        raise InvalidActivity(f"fill activity {name} is not a finite non-negative number")
    return number


def execution_id_of(activity: Mapping[str, Any]) -> str | None:
    """The broker's execution id: its own field, else the part of the activity id after `::`
    (Alpaca activity ids are `<time>::<execution id>`)."""
    explicit = activity.get("execution_id")
    if isinstance(explicit, str) and explicit.strip():
        return explicit.strip()
    activity_id = str(activity.get("id") or "")
    _, sep, tail = activity_id.partition("::")
    return tail.strip() or None if sep else None


def activity_update(account: str, activity: Mapping[str, Any]) -> TradeUpdate:
    """One FILL activity of `account` as a trade update of that account (raises
    `InvalidActivity`). Its cumulative fill (`cum_qty`) is what the apply folds in."""
    kind = str(activity.get("type") or "")
    if kind not in FILL_TYPES:
        raise InvalidActivity(f"not a fill activity: type {kind!r}")
    order_id = str(activity.get("order_id") or "").strip() or None
    if order_id is None:
        raise InvalidActivity("fill activity without order_id")
    execution_id = execution_id_of(activity)
    if execution_id is None:
        raise InvalidActivity("fill activity without an execution id")
    qty = _decimal(activity, "qty")
    price = _decimal(activity, "price")
    cum_qty = _decimal(activity, "cum_qty")
    leaves = _decimal(activity, "leaves_qty", required=False)
    order_qty = cum_qty + leaves if cum_qty is not None and leaves is not None else None
    status = str(activity.get("order_status") or "").strip() or (
        "filled" if kind == "fill" else "partially_filled"
    )
    client_order_id = str(activity.get("client_order_id") or "").strip() or None
    when = activity.get("transaction_time")
    if not when:
        raise InvalidActivity("fill activity without transaction_time")
    try:
        update = TradeUpdate(
            account_label=account,
            attribution=Attribution.payload,
            fingerprint="pending",
            event=kind,
            event_ts=when,
            order_id=order_id,
            client_order_id=client_order_id,
            status=status,
            symbol=activity.get("symbol"),
            side=activity.get("side"),
            execution_id=execution_id,
            qty=qty,
            price=price,
            order_qty=order_qty,
            filled_qty=cum_qty,
            source_topic=SOURCE_TOPIC,
            raw={"activity": dict(activity)},
        )
    except ValidationError as exc:
        raise InvalidActivity(f"fill activity not valid: {exc.error_count()} error(s)") from None
    fingerprint = event_fingerprint(
        account_label=account,
        order_id=order_id,
        client_order_id=client_order_id,
        event=kind,
        status=status,
        event_ts=update.event_ts,
        execution_id=execution_id,
        qty=qty,
        filled_qty=cum_qty,
        filled_avg_price=None,
    )
    return update.model_copy(update={"fingerprint": fingerprint})


@dataclass
class ReplayReport:
    account: str
    pages: int = 0
    fills: int = 0
    skipped: list[str] = field(default_factory=list)  # why activities were not applied
    initialised: bool = False
    cursor: str | None = None
    complete: bool = True  # False: the page limit stopped it; the next replay continues


async def replay_fills(
    account: str,
    source: FillSource,
    store: FillCursorStore,
    apply: ApplyUpdates,
    *,
    baseline: Baseline,
    max_pages: int = 20,
    page_size: int = PAGE_SIZE,
) -> ReplayReport:
    """Apply `account`'s fill activities after its stored cursor, page by page, the cursor
    advanced after each page is applied. Broker and database errors propagate (the caller
    retries: nothing past the last stored page was skipped)."""
    report = ReplayReport(account)
    cursor = await store.fill_cursor(account)
    if cursor is None:
        newest = await source.fill_activities(None, 1, "desc")
        token = str(newest[0]["id"]) if newest else None
        cursor = await store.init_fill_cursor(account, token, await baseline(account))
        report.initialised = True
        report.cursor = cursor.page_token
        return report
    token = cursor.page_token
    for _ in range(max_pages):
        page = await source.fill_activities(token, page_size, "asc")
        if not page:
            break
        updates: list[TradeUpdate] = []
        for activity in page:
            try:
                updates.append(activity_update(account, activity))
            except InvalidActivity as exc:
                report.skipped.append(str(exc))
                log.warning(
                    "fill activity skipped: %s",
                    exc,
                    extra={"account": account, "id": _id(activity)},
                )
        if updates:
            await apply(updates)
        report.fills += len(updates)
        report.pages += 1
        last = _id(page[-1])
        if last is None:
            report.skipped.append("fill activity without id: replay stopped")
            break
        token = last
        await store.advance_fill_cursor(account, token)
        if len(page) < page_size:
            break
    else:
        report.complete = False
    report.cursor = token
    return report


def _id(activity: Mapping[str, Any]) -> str | None:
    value = activity.get("id")
    return str(value) if value else None
