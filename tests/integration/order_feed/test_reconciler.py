"""The REST reconciler against real Postgres and the simulator over real HTTP."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import MarketOrderRequest
from pydantic import SecretStr

from simulator.testing import RunningSimulator
from streams.broker.alpaca import AlpacaBroker
from streams.domain.accounts import Account, AccountMode
from streams.persistence.repository import DecisionRow, ExecutionRow, Repository
from streams.reconciliation.reconciler import ReconcilePolicy, Reconciler
from tests.integration.order_feed.test_apply import client_id, execution_state, fetch

pytestmark = pytest.mark.integration

ACCOUNTS = [
    {"label": "acct-a", "key": "AKA", "secret": "SA"},
    {"label": "acct-b", "key": "AKB", "secret": "SB"},
]


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with RunningSimulator({"accounts": ACCOUNTS}, seed=3) as running:
        yield running


def account(sim: RunningSimulator, label: str, secret: str | None = None) -> Account:
    cfg = sim.account(label)
    return Account(
        label=label,
        mode=AccountMode.paper,
        api_key=SecretStr(cfg.key),
        secret_key=SecretStr(secret or cfg.secret),
        base_url=sim.url,
    )


def submit(sim: RunningSimulator, label: str, n: int, qty: int = 3) -> Any:
    request = MarketOrderRequest(
        symbol="AAPL",
        qty=qty,
        side=OrderSide.BUY,
        time_in_force=TimeInForce.DAY,
        client_order_id=client_id(n),
    )
    return sim.trading_client(label).submit_order(request)


async def decide(repo: Repository, label: str, n: int, status: str) -> None:
    await repo.upsert_decisions(
        [
            DecisionRow(
                account_label=label,
                decision_hash=client_id(n),
                strategy_id="s",
                symbol="AAPL",
                timeframe="1Sec",
                action="buy",
                event_ts=datetime.now(UTC),
                status=status,
            )
        ]
    )


def reconciler(
    repo: Repository, brokers: dict[str, AlpacaBroker], timeout: float = 10
) -> Reconciler:
    return Reconciler(
        repo,
        brokers.get,
        policy=ReconcilePolicy(
            account_timeout=timeout,
            pending_after=timedelta(0),
            unsubmitted_after=timedelta(seconds=-1),
        ),
    )


def broker(acct: Account) -> AlpacaBroker:
    return AlpacaBroker(acct, timeout_seconds=4, rate_limit_per_minute=600)


async def test_stale_execution_and_crash_after_submit_are_repaired(
    sim: RunningSimulator, repo: Repository, head_dsn: str
) -> None:
    a = broker(account(sim, "acct-a"))
    try:
        # 1: the stream missed the fill; the execution still says `new`.
        order = submit(sim, "acct-a", 1)
        await decide(repo, "acct-a", 1, "submitted")
        await repo.upsert_execution(
            ExecutionRow(
                account_label="acct-a",
                client_order_id=client_id(1),
                alpaca_order_id=str(order.id),
                symbol="AAPL",
                side="buy",
                order_type="market",
                time_in_force="day",
                submitted_qty=Decimal(3),
                status="new",
            )
        )
        # 2: the lane crashed after the broker accepted: decision `submitting`, no execution.
        submit(sim, "acct-a", 2)
        await decide(repo, "acct-a", 2, "submitting")
        # 3: planned but never submitted and past the age limit.
        await decide(repo, "acct-a", 3, "planned")

        report = await reconciler(repo, {"acct-a": a}).reconcile_account("acct-a")

        assert (report.executions_fixed, report.decisions_recovered) == (1, 1)
        assert report.decisions_timed_out == 1
        rows = await fetch(
            head_dsn,
            "SELECT client_order_id, status, filled_qty, avg_fill_price, trade_decision_id "
            "FROM executions ORDER BY client_order_id",
        )
        assert [(r["status"], r["filled_qty"]) for r in rows] == [
            ("filled", Decimal(3)),
            ("filled", Decimal(3)),
        ]
        assert all(r["avg_fill_price"] > 0 and r["trade_decision_id"] for r in rows)
        decisions = await fetch(
            head_dsn,
            "SELECT decision_hash, status, rejection_reasons FROM trade_decisions "
            "ORDER BY decision_hash",
        )
        assert [d["status"] for d in decisions] == ["filled", "filled", "rejected"]
        assert "decision_timeout_unsubmitted" in decisions[2]["rejection_reasons"]
        # A second run finds nothing left to do.
        again = await reconciler(repo, {"acct-a": a}).reconcile_account("acct-a")
        assert (again.executions_checked, again.decisions_recovered) == (0, 0)
    finally:
        await a.close()


async def test_one_accounts_broker_trouble_does_not_delay_another(
    sim: RunningSimulator, repo: Repository, head_dsn: str
) -> None:
    a, b = broker(account(sim, "acct-a")), broker(account(sim, "acct-b"))
    bad = broker(account(sim, "acct-a", secret="wrong").model_copy(update={"label": "acct-c"}))
    try:
        order_a, order_b = submit(sim, "acct-a", 11), submit(sim, "acct-b", 12)
        for label, n, order in (("acct-a", 11, order_a), ("acct-b", 12, order_b)):
            await repo.upsert_execution(
                ExecutionRow(
                    account_label=label,
                    client_order_id=client_id(n),
                    alpaca_order_id=str(order.id),
                    symbol="AAPL",
                    side="buy",
                    order_type="market",
                    time_in_force="day",
                    submitted_qty=Decimal(3),
                    status="new",
                )
            )
        await repo.upsert_execution(
            ExecutionRow(
                account_label="acct-c",
                client_order_id=client_id(13),
                alpaca_order_id=str(order_a.id),
                symbol="AAPL",
                side="buy",
                order_type="market",
                time_in_force="day",
                submitted_qty=Decimal(3),
                status="new",
            )
        )
        sim.admin.set_faults("acct-b", {"hang_next": 5, "hang_seconds": 30})
        rec = reconciler(repo, {"acct-a": a, "acct-b": b, "acct-c": bad}, timeout=2.5)
        finished: dict[str, float] = {}
        started = time.monotonic()

        async def run(label: str) -> str:
            outcome = await rec.reconcile_bounded(label)
            finished[label] = time.monotonic() - started
            return outcome

        outcomes = await asyncio.gather(*(run(x) for x in ("acct-b", "acct-c", "acct-a")))
        assert outcomes == ["timeout", "error", "ok"]
        assert finished["acct-a"] < 2.0 <= finished["acct-b"]
        assert (await execution_state(head_dsn, "acct-a"))[:2] == ("filled", Decimal(3))
        assert (await execution_state(head_dsn, "acct-b"))[:2] == ("new", Decimal(0))
        assert (await execution_state(head_dsn, "acct-c"))[:2] == ("new", Decimal(0))
    finally:
        sim.admin.clear_faults("acct-b")
        for x in (a, b, bad):
            await x.close()
