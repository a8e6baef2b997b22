"""Which account a trade update belongs to, in precedence order, or none yet.

1. The labels the event carries (payload → order → envelope): every one must pass the label rule
   and name an account of the registry, and they must agree (else a dead letter).
2. The owner of its order in the order index (a global table: the replica of this worker may not
   have a fresh entry yet).
3. The owner of its order in Postgres (the decision hash is the client order id and has the
   account inside it; executions carry the Alpaca order id). Bounded: a few quick attempts, then
   the event is treated as not attributable *yet*.
4. Nothing found: in multi-account mode the caller holds the event under no account
   (`unattributed_order_events`); in single-account mode the default label is the last resort.

The order is looked up by client order id when the event has one, else by Alpaca order id, never
both: an unknown client id with a known Alpaca id is no evidence for that Alpaca id's account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from schemas.trade_update import TradeUpdateEnvelope
from streams.domain.trade_updates.model import Attribution
from streams.domain.trade_updates.normalise import order_identity
from streams.domain.trade_updates.validate import (
    InvalidTradeUpdate,
    check_account,
    declared_account,
)
from streams.errors import retry_transient

log = logging.getLogger(__name__)

# (client order id, alpaca order id) → the account label the order index holds, or None.
IndexLookup = Callable[[str | None, str | None], str | None]
# (client order id, alpaca order id) → every account Postgres knows the order under.
OwnerQuery = Callable[[str | None, str | None], Awaitable[list[str]]]

_DECLARED = {
    "payload.account_label": Attribution.payload,
    "payload.order.account_label": Attribution.order,
    "accountLabel": Attribution.envelope,
}


def _key(client_order_id: str | None, order_id: str | None) -> tuple[str | None, str | None]:
    """The client order id when there is one, else the Alpaca order id; never both."""
    return (client_order_id, None) if client_order_id else (None, order_id)


@dataclass(frozen=True, slots=True)
class Owner:
    label: str
    attribution: Attribution


def owner_from(
    owners: list[str], known: frozenset[str], attribution: Attribution, where: str
) -> Owner | None:
    """One owner from a lookup's answer; several accounts for one order is a dead letter."""
    distinct = sorted(set(owners))
    if not distinct:
        return None
    if len(distinct) > 1:
        raise InvalidTradeUpdate("ambiguous_account", f"{where}: the order has several owners")
    return Owner(check_account(distinct[0], known, where), attribution)


class Attributor:
    def __init__(
        self,
        *,
        known_accounts: frozenset[str],
        index: IndexLookup,
        query: OwnerQuery,
        multi_account: bool,
        default_label: str,
        lookup_attempts: int = 3,
        lookup_timeout: float = 2.0,
    ) -> None:
        self.known = known_accounts
        self.multi_account = multi_account
        self._index = index
        self._query = query
        self._default = default_label
        self._attempts = lookup_attempts
        self._timeout = lookup_timeout

    async def owner(self, envelope: TradeUpdateEnvelope) -> Owner | None:
        """The event's account, or None (multi-account: hold it). Raises `InvalidTradeUpdate`
        (a dead letter) for labels outside the registry, conflicting or ambiguous evidence."""
        declared = declared_account(envelope, self.known)
        if declared is not None:
            label, where = declared
            return Owner(label, _DECLARED[where])
        order_id, client_order_id = order_identity(envelope)
        found = await self.order_owner(client_order_id, order_id)
        if found is not None or self.multi_account:
            return found
        return Owner(self._default, Attribution.default)

    async def order_owner(self, client_order_id: str | None, order_id: str | None) -> Owner | None:
        """The owner of the order: order index, then Postgres; None when neither knows it."""
        indexed = self.indexed_owner(client_order_id, order_id)
        if indexed is not None:
            return indexed
        owners = await self._lookup(*_key(client_order_id, order_id))
        return owner_from(owners or [], self.known, Attribution.database, "postgres")

    def indexed_owner(self, client_order_id: str | None, order_id: str | None) -> Owner | None:
        indexed = self._index(*_key(client_order_id, order_id))
        if not indexed:
            return None
        return Owner(check_account(indexed, self.known, "order index"), Attribution.order_index)

    async def _lookup(self, client_order_id: str | None, order_id: str | None) -> list[str] | None:
        """Postgres, bounded (the feed must not stall on it); None when it cannot answer."""

        async def once() -> list[str]:
            return await asyncio.wait_for(self._query(client_order_id, order_id), self._timeout)

        try:
            return await retry_transient(
                once, "order owner lookup", first_delay=0.1, attempts=self._attempts
            )
        except Exception as exc:  # noqa: BLE001 - unavailable: the event is held, not lost
            log.warning("order owner lookup failed: %s", type(exc).__name__)
            return None
