"""The order-feed applier against real Postgres: the reference implementation's order-feed
scenarios (dedupe, monotonic apply, attribution, account isolation, late linking)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from streams.dlq import DeadLetters
from streams.domain.trade_updates.model import Attribution, TradeUpdate, encode_record
from streams.domain.trade_updates.normalise import SourceCoordinates, held_event, normalise
from streams.domain.trade_updates.outcome import Outcome
from streams.domain.trade_updates.validate import declared_account
from streams.persistence.repository import DecisionRow, ExecutionRow, Repository
from streams.reconciliation.applier import BatchReport, OrderFeedApplier
from streams.reconciliation.attribution import Attributor
from streams.reconciliation.router import TradeUpdateRouter
from streams.reconciliation.unattributed import UnattributedSweep
from tests.support.pg import fetch
from tests.unit.order_feed.helpers import data, parse, v1, v2

pytestmark = pytest.mark.integration

ORDER_ID = "61e69015-8549-4bfd-b9c3-01e75843f47d"
KNOWN = frozenset({"paper", "acct-a", "acct-b"})


@dataclass
class FakeEvent:
    value: bytes


class Harness:
    def __init__(self, repo: Repository) -> None:
        self.dead: list[str] = []
        self.reconciles: list[str] = []
        self.offset = 0
        self.applier = OrderFeedApplier(
            repo,
            known_accounts=KNOWN,
            dead_letter=self._dead_letter,
            request_reconcile=self._reconcile,
        )

    async def _dead_letter(self, event: Any, reason: str, error: BaseException | None) -> None:
        self.dead.append(reason)

    async def _reconcile(self, account: str, reason: str) -> None:
        self.reconciles.append(account)

    def update(
        self, envelope: dict[str, Any], topic: str = "t.v2", owner: str | None = None
    ) -> TradeUpdate:
        """The router's attribution in short: declared label, else `owner`, else default."""
        self.offset += 1
        parsed = parse(envelope)
        declared = declared_account(parsed, KNOWN)
        account, attribution = (
            (declared[0], Attribution.payload)
            if declared
            else (owner, Attribution.order_index)
            if owner
            else ("paper", Attribution.default)
        )
        return normalise(
            parsed,
            SourceCoordinates(topic, 0, self.offset),
            account,
            attribution,
            received_at=datetime.now(UTC),
        )

    async def apply(self, *updates: TradeUpdate | bytes) -> BatchReport:
        events = [FakeEvent(u if isinstance(u, bytes) else encode_record(u)) for u in updates]
        return await self.applier.apply(events)


def client_id(n: int) -> str:
    return f"{n:064x}"


async def seed(repo: Repository, account: str, n: int = 1, status: str = "new") -> None:
    await repo.upsert_decisions(
        [
            DecisionRow(
                account_label=account,
                decision_hash=client_id(n),
                strategy_id="s",
                symbol="AAPL",
                timeframe="1Sec",
                action="buy",
                event_ts=datetime.now(UTC),
                status="submitting",
            )
        ]
    )
    await repo.upsert_execution(
        ExecutionRow(
            account_label=account,
            client_order_id=client_id(n),
            alpaca_order_id=ORDER_ID,
            symbol="AAPL",
            side="buy",
            order_type="market",
            time_in_force="day",
            submitted_qty=Decimal(10),
            status=status,
        )
    )


async def execution_state(dsn: str, account: str) -> tuple[str, Decimal, Decimal | None]:
    rows = await fetch(
        dsn,
        "SELECT status, filled_qty, avg_fill_price FROM executions WHERE alpaca_account_label=$1",
        account,
    )
    assert len(rows) == 1
    return rows[0]["status"], rows[0]["filled_qty"], rows[0]["avg_fill_price"]


async def event_rows(dsn: str, account: str) -> list[asyncpg.Record]:
    return await fetch(
        dsn,
        "SELECT event_type, execution_id, trade_decision_id FROM execution_order_events "
        "WHERE alpaca_account_label=$1 ORDER BY id",
        account,
    )


def fill(n_filled: str, exec_id: str, event: str = "partial_fill", **kw: Any) -> dict[str, Any]:
    status = "filled" if event == "fill" else "partially_filled"
    return data(
        event,
        execution_id=exec_id,
        qty="5",
        price=kw.pop("price", "100"),
        status=status,
        filled_qty=n_filled,
        filled_avg_price=kw.pop("avg", "100"),
        client_order_id=client_id(1),
        **kw,
    )


async def test_v1_and_v2_copies_and_replays_give_one_row_each(
    repo: Repository, head_dsn: str
) -> None:
    h = Harness(repo)
    await seed(repo, "acct-a")
    first, second = fill("5", "x-1"), fill("10", "x-2", "fill", avg="101", price="102")
    owner_a = "acct-a"
    report = await h.apply(
        h.update(v1(first), "t.v1", owner_a),
        h.update(v2(first, "acct-a")),
        h.update(v2(second, "acct-a")),
    )
    assert (report.received, report.duplicates) == (3, 1)
    # The v1 copy of the second fill comes in a later batch, then the stream replays it.
    later = await h.apply(
        h.update(v1(second, seq=7), "t.v1", owner_a), h.update(v2(second, "acct-a", seq=9))
    )
    assert later.duplicates == 2
    assert later.outcomes == {Outcome.unchanged: 1}  # already applied: not out of order
    assert [r["event_type"] for r in await event_rows(head_dsn, "acct-a")] == [
        "partial_fill",
        "fill",
    ]
    assert await execution_state(head_dsn, "acct-a") == ("filled", Decimal(10), Decimal(101))
    decisions = await fetch(head_dsn, "SELECT status FROM trade_decisions")
    assert [d["status"] for d in decisions] == ["filled"]


async def test_stale_event_does_not_regress_a_filled_execution(
    repo: Repository, head_dsn: str
) -> None:
    h = Harness(repo)
    await seed(repo, "acct-a")
    report = await h.apply(
        h.update(v2(fill("10", "x-2", "fill", avg="101"), "acct-a")),
        h.update(v2(fill("5", "x-1"), "acct-a")),
        h.update(v2(data("new", qty=None, status="new", filled_qty="0"), "acct-a")),
    )
    assert report.outcomes == {Outcome.applied: 1, Outcome.out_of_order: 2}
    assert await execution_state(head_dsn, "acct-a") == ("filled", Decimal(10), Decimal(101))
    assert len(await event_rows(head_dsn, "acct-a")) == 3  # all stored, none applied backwards


async def test_missing_order_identity_and_garbage_are_dead_lettered(repo: Repository) -> None:
    h = Harness(repo)
    report = await h.apply(b"{not json", b'{"kind": "trade_update"}')
    assert report.dead_lettered == 2
    assert h.dead == ["account_update_invalid", "account_update_invalid"]


async def test_v1_event_with_the_default_label_never_touches_another_account(
    repo: Repository, head_dsn: str
) -> None:
    h = Harness(repo)
    await seed(repo, "acct-b")  # B owns an execution with this very order id
    update = h.update(v1(fill("10", "x-9", "fill")), "t.v1")
    assert update.account_label == "paper"
    report = await h.apply(update)
    assert report.outcomes == {Outcome.unlinked: 1}
    assert await execution_state(head_dsn, "acct-b") == ("new", Decimal(0), None)
    assert await event_rows(head_dsn, "acct-b") == []
    stored = await event_rows(head_dsn, "paper")
    assert [r["execution_id"] for r in stored] == [None]


async def test_v2_and_order_level_labels_win_over_the_default(
    repo: Repository, head_dsn: str
) -> None:
    h = Harness(repo)
    await seed(repo, "acct-a")
    await seed(repo, "paper")
    await h.apply(h.update(v2(fill("5", "x-1"), "acct-a")))
    await h.apply(h.update(v1(fill("10", "x-2", "fill", account_label="acct-a")), "t.v1"))
    assert await execution_state(head_dsn, "acct-a") == ("filled", Decimal(10), Decimal(100))
    assert await execution_state(head_dsn, "paper") == ("new", Decimal(0), None)


async def test_event_before_its_execution_is_linked_when_the_execution_appears(
    repo: Repository, head_dsn: str
) -> None:
    h = Harness(repo)
    report = await h.apply(h.update(v2(fill("10", "x-2", "fill", avg="99.5"), "acct-a")))
    assert report.outcomes == {Outcome.unlinked: 1}
    assert [r["execution_id"] for r in await event_rows(head_dsn, "acct-a")] == [None]
    await seed(repo, "acct-a")  # the lane records the POST answer after the fill arrived
    linked = await event_rows(head_dsn, "acct-a")
    assert linked[0]["execution_id"] is not None
    assert linked[0]["trade_decision_id"] is not None
    assert await execution_state(head_dsn, "acct-a") == ("filled", Decimal(10), Decimal("99.5"))


async def test_reconcile_requests_are_forwarded_not_applied(repo: Repository) -> None:
    from streams.domain.trade_updates.model import ReconcileRequest

    h = Harness(repo)
    request = ReconcileRequest(account_label="acct-b", reason="x", requested_at=datetime.now(UTC))
    report = await h.apply(encode_record(request))
    assert (report.reconcile_requests, h.reconciles) == (1, ["acct-b"])


async def test_rekeyed_records_of_unknown_or_invalid_accounts_are_dead_letters(
    repo: Repository, head_dsn: str
) -> None:
    """Whoever wrote the re-keyed topic, the applier writes no row under a label outside the
    registry, nor a future-dated or negative one."""
    h = Harness(repo)
    good = h.update(v2(fill("5", "x-1"), "acct-a"))
    ghost = good.model_copy(update={"account_label": "ho-ghost"})
    invalid = good.model_copy(update={"account_label": "HO ALPHA!"})
    negative = good.model_copy(update={"filled_qty": Decimal(-1), "fingerprint": "n" * 64})
    future = good.model_copy(
        update={"event_ts": datetime(9999, 12, 31, tzinfo=UTC), "fingerprint": "f" * 64}
    )
    report = await h.apply(ghost, invalid, negative, future)
    assert report.dead_lettered == 4
    assert h.dead == [
        "unknown_account",
        "unknown_account",
        "invalid_number",
        "event_time_in_future",
    ]
    assert await fetch(head_dsn, "SELECT * FROM execution_order_events") == []


async def test_postgres_names_the_owner_of_an_order_by_client_id_else_by_order_id(
    repo: Repository,
) -> None:
    await seed(repo, "acct-b")  # decision + execution: client id 1, ORDER_ID
    assert await repo.order_owners(client_id(1), None) == ["acct-b"]
    assert await repo.order_owners(None, ORDER_ID) == ["acct-b"]
    # An unknown client id is no evidence for the account of a matching Alpaca order id.
    assert await repo.order_owners(client_id(2), ORDER_ID) == []
    assert await repo.order_owners(client_id(2), None) == []


async def test_held_events_move_to_their_account_once_the_order_is_known(
    repo: Repository, head_dsn: str
) -> None:
    """Hold (router) → sweep finds no owner → the order appears → the sweep re-publishes the
    event under its account → the applier stores and folds it like any other update."""
    h = Harness(repo)
    published: list[TradeUpdate] = []

    class Topic:
        async def send(self, *, key: bytes, value: bytes) -> Any:
            published.append(TradeUpdate.model_validate_json(value))
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    class NoDlq:
        async def send(self, *, key: bytes | None, value: bytes) -> None:
            raise AssertionError("no dead letter expected")

    router = TradeUpdateRouter(
        attributor=Attributor(
            known_accounts=KNOWN,
            index=lambda c, o: None,
            query=repo.order_owners,
            multi_account=True,
            default_label="paper",
        ),
        hold=repo.hold_unattributed,
        account_updates=Topic(),  # type: ignore[arg-type]
        dead_letters=DeadLetters(NoDlq()),
        max_event_time_skew=timedelta(minutes=5),
    )
    sweep = UnattributedSweep(
        router=router, store=lambda: _ready(repo), dead_letters=DeadLetters(NoDlq())
    )
    envelope = v1(fill("10", "x-2", "fill", avg="99.5"))
    parsed, source = parse(envelope), SourceCoordinates("t.v1", 2, 40)
    assert await router.prepare(parsed, source, T_NOW) is None  # nobody owns it yet
    assert await repo.hold_unattributed(held_event(parsed, source, T_NOW, envelope))
    assert not await repo.hold_unattributed(held_event(parsed, source, T_NOW, envelope))

    first = await sweep.sweep()
    assert (first.held, first.waiting, first.resolved, published) == (1, 1, 0, [])
    assert sweep.held == 1

    await seed(repo, "acct-a")  # the lane persists the decision and its execution
    second = await sweep.sweep()
    assert (second.resolved, sweep.held) == (1, 0)
    [update] = published
    assert (update.account_label, update.attribution) == ("acct-a", Attribution.database)
    assert (update.source_topic, update.source_partition, update.source_offset) == ("t.v1", 2, 40)
    assert await fetch(head_dsn, "SELECT * FROM unattributed_order_events") == []
    await h.apply(update)
    rows = await event_rows(head_dsn, "acct-a")
    assert [(r["event_type"], r["execution_id"] is not None) for r in rows] == [("fill", True)]
    assert await execution_state(head_dsn, "acct-a") == ("filled", Decimal(10), Decimal("99.5"))
    assert await event_rows(head_dsn, "paper") == []


T_NOW = datetime(2026, 3, 2, 15, 0, 1, tzinfo=UTC)


async def _ready(repo: Repository) -> Repository:
    return repo
