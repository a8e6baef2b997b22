"""Order-feed batches: infrastructure failures are retried within the batch's budget and then
give up without acking (never a dead letter); poison stays isolated to its own record."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from streams.persistence.rows import ApplyOutcome, ApplyResult, OrderEventRow, OrderUpdateRow
from streams.reconciliation.applier import OrderFeedApplier
from streams.reconciliation.service import ORDER_FEED_UNAVAILABLE, apply_each_batch
from tests.unit.order_feed.fakes import KNOWN, NOW, World, event, route
from tests.unit.order_feed.helpers import data, v2

BUDGET = 1.0


class GaveUp(Exception):
    """Stands for the process exit (`exit_worker` never returns)."""


class FlakyStore:
    """Fails the first `failures` calls with `error` (or hangs when `hang`), then works."""

    def __init__(
        self,
        failures: int = 0,
        error: BaseException | None = None,
        hang: bool = False,
        poison_order: str | None = None,
    ) -> None:
        self.failures = failures
        self.error = error or ConnectionRefusedError("postgres down")
        self.hang = hang
        self.poison_order = poison_order
        self.calls = 0
        self.rows: dict[str, OrderEventRow] = {}
        self.applied: list[str] = []

    async def _fail(self) -> None:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        if self.failures > 0:
            self.failures -= 1
            raise self.error

    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int:
        await self._fail()
        if self.poison_order is not None and any(
            r.alpaca_order_id == self.poison_order for r in rows
        ):
            raise asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence")
        new = [r for r in rows if r.event_fingerprint not in self.rows]
        self.rows.update({r.event_fingerprint: r for r in new})
        return len(new)

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        await self._fail()
        self.applied.append(update.alpaca_order_id or "")
        return ApplyResult(ApplyOutcome.not_found)


ORDERS = [
    "11111111-8549-4bfd-b9c3-01e75843f47d",
    "22222222-8549-4bfd-b9c3-01e75843f47d",
    "33333333-8549-4bfd-b9c3-01e75843f47d",
]


async def batch() -> list[Any]:
    """Three valid re-keyed trade updates of acct-a, as the account_updates agent gets them."""
    world = await route(
        World(),
        *(
            v2(data(order_id=o, client_order_id=f"c{n}"), "acct-a", seq=n)
            for n, o in enumerate(ORDERS)
        ),
    )
    return [event(value, offset=n) for n, (_, value) in enumerate(world.out.records)]


def applier(store: FlakyStore, dead: list[str]) -> OrderFeedApplier:
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
        retry_seconds=BUDGET,
    )


async def run(store: FlakyStore, events: list[Any]) -> tuple[list[str], list[str]]:
    """Apply one batch; returns (dead-letter reasons, give-up reasons)."""
    dead: list[str] = []
    gave_up: list[str] = []

    async def batches() -> AsyncIterator[Sequence[Any]]:
        yield events

    async def dead_letter(event: Any, reason: str, error: BaseException) -> None:
        dead.append(reason)

    def give_up(reason: str) -> None:
        gave_up.append(reason)
        raise GaveUp(reason)

    with contextlib.suppress(GaveUp):
        await apply_each_batch(applier(store, dead), batches(), dead_letter, give_up)
    return dead, gave_up


async def test_a_brief_outage_is_retried_inside_the_batch() -> None:
    store = FlakyStore(failures=2)
    dead, gave_up = await run(store, await batch())
    assert (dead, gave_up) == ([], [])
    assert len(store.rows) == 3
    assert sorted(store.applied) == sorted(ORDERS)


async def test_an_outage_past_the_budget_gives_up_unacked_and_dead_letters_nothing() -> None:
    store = FlakyStore(failures=10_000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    dead, gave_up = await run(store, await batch())
    elapsed = loop.time() - started
    assert dead == []
    assert len(gave_up) == 1 and gave_up[0].startswith(f"{ORDER_FEED_UNAVAILABLE}:")
    assert "ConnectionRefusedError" in gave_up[0]
    assert elapsed <= BUDGET + 0.2
    assert 2 <= store.calls <= 6  # a bounded number of attempts, not one
    assert store.applied == []


async def test_a_hung_statement_is_cut_off_at_the_budget() -> None:
    store = FlakyStore(hang=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    dead, gave_up = await run(store, await batch())
    assert dead == []
    assert len(gave_up) == 1 and "TimeoutError" in gave_up[0]
    assert loop.time() - started <= BUDGET + 0.2


async def test_a_transient_postgres_error_is_infrastructure_too() -> None:
    store = FlakyStore(failures=10_000, error=asyncpg.exceptions.AdminShutdownError("shutdown"))
    dead, gave_up = await run(store, await batch())
    assert dead == [] and len(gave_up) == 1


async def test_a_poison_record_is_dead_lettered_alone() -> None:
    store = FlakyStore(poison_order=ORDERS[1])
    dead, gave_up = await run(store, await batch())
    assert gave_up == []
    assert dead == ["order_event_store_failed"]
    assert {r.alpaca_order_id for r in store.rows.values()} == {ORDERS[0], ORDERS[2]}


async def test_a_poison_record_during_a_brief_outage_is_still_alone() -> None:
    store = FlakyStore(failures=2, poison_order=ORDERS[0])
    dead, gave_up = await run(store, await batch())
    assert gave_up == []
    assert dead == ["order_event_store_failed"]
    assert {r.alpaca_order_id for r in store.rows.values()} == {ORDERS[1], ORDERS[2]}


async def test_an_unknown_error_of_the_batch_statement_falls_back_to_one_by_one() -> None:
    store = FlakyStore(failures=1, error=RuntimeError("not the infrastructure"))
    # Not infrastructure: not waited out, the records are stored one by one (and succeed).
    dead, gave_up = await run(store, await batch())
    assert (dead, gave_up) == ([], [])
    assert len(store.rows) == 3


@pytest.mark.parametrize(
    ("error", "infrastructure"),
    [
        (ConnectionResetError("reset"), True),
        (TimeoutError(), True),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), True),
        (asyncpg.exceptions.CharacterNotInRepertoireError("NUL"), False),
        (asyncpg.exceptions.UniqueViolationError("dup"), False),
    ],
)
async def test_classification_decides_retry_or_isolation(
    error: BaseException, infrastructure: bool
) -> None:
    store = FlakyStore(failures=10_000, error=error)
    dead, gave_up = await run(store, await batch())
    if infrastructure:
        assert (dead, len(gave_up)) == ([], 1)
    else:  # poison: each record dead-lettered on its own, no give-up
        assert gave_up == []
        assert dead.count("order_event_store_failed") == 3
        assert set(dead) == {"order_event_store_failed", "order_update_apply_failed"}
