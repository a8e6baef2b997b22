"""A router and an applier over in-memory fakes: what each record became (sent, held, dead)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codecs import decode_dead_letter
from streams.dlq import DeadLetters
from streams.domain.trade_updates.model import TradeUpdate, decode_record
from streams.persistence.rows import (
    ApplyOutcome,
    ApplyResult,
    HeldEventRow,
    OrderEventRow,
    OrderUpdateRow,
)
from streams.reconciliation.applier import OrderFeedApplier
from streams.reconciliation.attribution import Attributor
from streams.reconciliation.router import TradeUpdateRouter

KNOWN = frozenset({"paper", "acct-a", "acct-b"})
NOW = datetime(2026, 3, 2, 15, 1, tzinfo=UTC)


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float | None = None


@dataclass
class Event:
    value: bytes | None
    message: Message


def event(value: bytes | None, offset: int = 0, topic: str = "t.v1") -> Event:
    return Event(value, Message(topic, 0, offset, b"AAPL", value, NOW.timestamp()))


class Sink:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes) -> Any:
        self.records.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@dataclass
class World:
    """One router: `index`/`postgres` answer owners; `postgres_down` makes lookups fail."""

    multi_account: bool = True
    index: dict[str, str] = field(default_factory=dict)
    postgres: dict[str, list[str]] = field(default_factory=dict)
    postgres_down: bool = False
    lookups: int = 0
    held: list[HeldEventRow] = field(default_factory=list)
    out: Sink = field(default_factory=Sink)
    dlq: Sink = field(default_factory=Sink)

    def router(self) -> TradeUpdateRouter:
        async def query(cid: str | None, oid: str | None) -> list[str]:
            self.lookups += 1
            if self.postgres_down:
                raise OSError("connection refused")
            return self.postgres.get(cid or oid or "", [])

        async def hold(row: HeldEventRow) -> bool:
            self.held.append(row)
            return True

        attributor = Attributor(
            known_accounts=KNOWN,
            index=lambda cid, oid: self.index.get(cid or oid or ""),
            query=query,
            multi_account=self.multi_account,
            default_label="paper",
            lookup_timeout=0.5,
        )
        return TradeUpdateRouter(
            attributor=attributor,
            hold=hold,
            account_updates=self.out,  # type: ignore[arg-type]
            dead_letters=DeadLetters(self.dlq),
            max_event_time_skew=timedelta(minutes=5),
            clock=lambda: NOW,
        )

    @property
    def sent(self) -> list[TradeUpdate]:
        out = [decode_record(value) for _, value in self.out.records]
        return [u for u in out if isinstance(u, TradeUpdate)]

    @property
    def reasons(self) -> list[str]:
        return [decode_dead_letter(value).reason for _, value in self.dlq.records]

    @property
    def errors(self) -> list[str]:
        return [decode_dead_letter(value).error or "" for _, value in self.dlq.records]


async def route(world: World, *envelopes: dict[str, Any] | bytes) -> World:
    router = world.router()
    for n, env in enumerate(envelopes):
        raw = env if isinstance(env, bytes) else json.dumps(env).encode()
        await router.route(event(raw, n))  # type: ignore[arg-type]
    return world


class MemoryStore:
    """The applier's store: keeps event rows (fingerprint-unique) and applies nothing."""

    def __init__(self) -> None:
        self.rows: dict[str, OrderEventRow] = {}

    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int:
        new = [r for r in rows if r.event_fingerprint not in self.rows]
        self.rows.update({r.event_fingerprint: r for r in new})
        return len(new)

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        return ApplyResult(ApplyOutcome.not_found)


def applier(store: MemoryStore, dead: list[str]) -> OrderFeedApplier:
    async def dead_letter(event: Any, reason: str, error: BaseException | None) -> None:
        dead.append(reason)

    async def reconcile(account: str, reason: str) -> None:
        return None

    return OrderFeedApplier(
        store,
        known_accounts=KNOWN,
        dead_letter=dead_letter,
        request_reconcile=reconcile,
        max_event_time_skew=timedelta(minutes=5),
        clock=lambda: NOW,
    )
