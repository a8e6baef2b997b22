"""Broker reconciliation pieces against real Postgres and the simulator over real HTTP (alpaca-py):
fill replay through the order-feed apply (once per execution id, idempotent, account-scoped), the
over-fill refusal, the adoption of open broker orders nobody here placed, position drift."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from pydantic import SecretStr

from simulator.testing import RunningSimulator
from streams.broker.alpaca import AlpacaBroker
from streams.domain.accounts import Account, AccountMode
from streams.domain.trade_updates import metrics
from streams.domain.trade_updates.rest import execution_from_rest, order_update_from_rest
from streams.persistence.repository import DecisionRow, ExecutionRow, Repository
from streams.reconciliation.applier import OrderFeedApplier
from streams.reconciliation.fills import SOURCE_TOPIC, activity_update, replay_fills
from streams.reconciliation.positions import position_drift
from streams.reconciliation.startup import position_quantities, reconcile_open_orders
from tests.support.pg import fetch

pytestmark = pytest.mark.integration

LABELS = ("acct-a", "acct-b")
ACCOUNTS = [{"label": x, "key": f"K-{x}", "secret": f"S-{x}"} for x in LABELS]
KNOWN = frozenset(LABELS)


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    # Every order fills in several executions: several fill activities per order.
    with RunningSimulator({"accounts": ACCOUNTS}, seed=5, partial_fill_prob=1.0) as running:
        running.admin.set_prices({"AAPL": "100", "MSFT": "200"})
        yield running


def broker(sim: RunningSimulator, label: str) -> AlpacaBroker:
    cfg = sim.account(label)
    account = Account(
        label=label,
        mode=AccountMode.paper,
        api_key=SecretStr(cfg.key),
        secret_key=SecretStr(cfg.secret),
        base_url=sim.url,
    )
    return AlpacaBroker(account, timeout_seconds=4, rate_limit_per_minute=600)


def applier(repo: Repository) -> OrderFeedApplier:
    async def no_dead_letter(event: Any, reason: str, error: BaseException | None) -> None:
        raise AssertionError(f"nothing here is dead-lettered ({reason})")

    async def no_reconcile(account: str, reason: str) -> None:
        return None

    return OrderFeedApplier(
        repo, known_accounts=KNOWN, dead_letter=no_dead_letter, request_reconcile=no_reconcile
    )


async def no_baseline(account: str) -> dict[str, Decimal]:
    return {}


def cid(tag: str) -> str:
    return f"{tag}-{time.monotonic_ns():x}"


async def record_order(
    repo: Repository, label: str, order: Any, *, qty: Decimal | None = None
) -> None:
    """A decision and its execution as the lane leaves them: `new`, nothing filled."""
    await repo.upsert_decisions(
        [
            DecisionRow(
                account_label=label,
                decision_hash=order.client_order_id,
                strategy_id="s",
                symbol=order.symbol,
                timeframe="1Sec",
                action="buy",
                event_ts=datetime.now(UTC),
                status="submitted",
            )
        ]
    )
    await repo.upsert_execution(
        ExecutionRow(
            account_label=label,
            client_order_id=order.client_order_id,
            alpaca_order_id=str(order.id),
            symbol=order.symbol,
            side="buy",
            order_type="market",
            time_in_force="day",
            submitted_qty=qty if qty is not None else Decimal(str(order.qty)),
            status="new",
        )
    )


async def broker_filled(sim: RunningSimulator, label: str, order_id: str) -> dict[str, Any]:
    for _ in range(100):
        order = next(o for o in sim.admin.orders(label) if o["id"] == order_id)
        if order["status"] == "filled":
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} of {label} not filled")


def market(sim: RunningSimulator, label: str, client_order_id: str, qty: int) -> Any:
    return sim.trading_client(label).submit_order(
        MarketOrderRequest(
            symbol="AAPL",
            qty=qty,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.DAY,
            client_order_id=client_order_id,
        )
    )


async def fill_rows(dsn: str, label: str, order_id: str) -> list[Any]:
    return await fetch(
        dsn,
        "SELECT alpaca_account_label, execution_id_alpaca, source_topic, event_type "
        "FROM execution_order_events WHERE alpaca_order_id = $1 AND alpaca_account_label = $2 "
        "AND event_type IN ('fill', 'partial_fill') ORDER BY id",
        order_id,
        label,
    )


async def test_missed_fills_are_replayed_once_per_execution_id_and_never_cross_accounts(
    sim: RunningSimulator, repo: Repository, head_dsn: str
) -> None:
    a, b = broker(sim, "acct-a"), broker(sim, "acct-b")
    try:
        apply = applier(repo).apply_updates
        for label, brk in (("acct-a", a), ("acct-b", b)):  # cursors start at the newest fill
            first = await replay_fills(label, brk, repo, apply, baseline=no_baseline)
            assert first.initialised
        # The same client order id at both accounts: the two orders must never meet.
        shared = cid("replay")
        order_a = market(sim, "acct-a", shared, 6)
        order_b = market(sim, "acct-b", shared, 4)
        await record_order(repo, "acct-a", order_a)
        await record_order(repo, "acct-b", order_b)
        filled = await broker_filled(sim, "acct-a", str(order_a.id))
        await broker_filled(sim, "acct-b", str(order_b.id))
        # No trade update was applied (all "dropped"): the executions still say `new`.
        activities = [
            x for x in await a.fill_activities(None, 100, "asc") if x["order_id"] == filled["id"]
        ]
        assert len(activities) >= 2  # partial fills, then the fill

        report = await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)
        assert report.fills == len(activities) and report.complete

        rows = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, status, filled_qty FROM executions "
            "WHERE client_order_id = $1 ORDER BY alpaca_account_label",
            shared,
        )
        assert [(r["alpaca_account_label"], r["status"], r["filled_qty"]) for r in rows] == [
            ("acct-a", "filled", Decimal(6)),
            ("acct-b", "new", Decimal(0)),  # acct-b's fills were not replayed: untouched
        ]
        stored = await fill_rows(head_dsn, "acct-a", str(order_a.id))
        ids = [r["execution_id_alpaca"] for r in stored]
        assert sorted(ids) == sorted(x["execution_id"] for x in activities)
        assert len(set(ids)) == len(ids)  # exactly one stored fill per execution id
        assert {r["source_topic"] for r in stored} == {SOURCE_TOPIC}
        assert await fill_rows(head_dsn, "acct-b", str(order_a.id)) == []
        assert await fill_rows(head_dsn, "acct-b", str(order_b.id)) == []
        cursor = await repo.fill_cursor("acct-a")
        assert cursor is not None and cursor.page_token == activities[-1]["id"]

        # Replayed again (from the start) and the live copy of a fill with another
        # fingerprint: still one row per execution id, the execution unchanged.
        await fetch(
            head_dsn,
            "UPDATE broker_fill_cursors SET page_token = NULL WHERE account_label = 'acct-a'",
        )
        again = await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)
        assert again.fills >= len(activities)
        live = activity_update("acct-a", activities[0]).model_copy(
            update={"fingerprint": "f" * 64, "filled_avg_price": Decimal("100")}
        )
        batch = await applier(repo).apply_updates([live])
        assert batch.duplicates == 1
        assert await fill_rows(head_dsn, "acct-a", str(order_a.id)) == stored
        after = await fetch(
            head_dsn,
            "SELECT status, filled_qty FROM executions WHERE alpaca_account_label = 'acct-a' "
            "AND client_order_id = $1",
            shared,
        )
        assert [(r["status"], r["filled_qty"]) for r in after] == [("filled", Decimal(6))]
        # acct-b's replay applies its own fills, to its own execution only
        b_report = await replay_fills("acct-b", b, repo, apply, baseline=no_baseline)
        assert b_report.fills >= 2
        rows = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, filled_qty FROM executions WHERE client_order_id = $1 "
            "ORDER BY alpaca_account_label",
            shared,
        )
        assert [(r["alpaca_account_label"], r["filled_qty"]) for r in rows] == [
            ("acct-a", Decimal(6)),
            ("acct-b", Decimal(4)),
        ]
    finally:
        await a.close()
        await b.close()


async def test_an_over_fill_is_refused_recorded_and_counted(
    sim: RunningSimulator, repo: Repository, head_dsn: str
) -> None:
    a = broker(sim, "acct-a")
    try:
        apply = applier(repo).apply_updates
        await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)  # cursor now
        order = market(sim, "acct-a", cid("over"), 3)
        # This system believes it asked for 2: the broker's 3 is an over-fill here.
        await record_order(repo, "acct-a", order, qty=Decimal(2))
        await broker_filled(sim, "acct-a", str(order.id))
        counted = metrics.OVERFILLS.labels("acct-a", "fill_replay")._value.get()

        await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)

        execution = await repo.get_execution("acct-a", alpaca_order_id=str(order.id))
        assert execution is not None
        assert execution.filled_qty <= Decimal(2) and execution.status != "filled"
        refusals = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, reason, order_qty, filled_qty FROM order_fill_refusals "
            "WHERE alpaca_order_id = $1",
            str(order.id),
        )
        assert refusals and {r["alpaca_account_label"] for r in refusals} == {"acct-a"}
        assert {r["reason"] for r in refusals} == {"overfill"}
        assert all(r["filled_qty"] > r["order_qty"] == Decimal(2) for r in refusals)
        assert metrics.OVERFILLS.labels("acct-a", "fill_replay")._value.get() > counted
    finally:
        await a.close()


async def test_open_broker_orders_nobody_here_placed_are_adopted_not_cancelled(
    sim: RunningSimulator, repo: Repository, head_dsn: str
) -> None:
    a = broker(sim, "acct-a")
    try:
        hand = sim.trading_client("acct-a").submit_order(
            LimitOrderRequest(
                symbol="MSFT",
                qty=2,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=150,  # below the market: it rests, open
                client_order_id=cid("hand"),
            )
        )
        for _ in range(2):  # twice: the second run adopts nothing new
            report = await reconcile_open_orders(
                "acct-a",
                await a.list_orders("open"),
                repo,
                execution_from=execution_from_rest,
                update_from=order_update_from_rest,
                now=datetime.now(UTC),
            )
        assert report.adopted == [] and report.folded >= 1
        rows = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, origin, status, trade_decision_id FROM executions "
            "WHERE alpaca_order_id = $1",
            str(hand.id),
        )
        assert [(r["alpaca_account_label"], r["origin"], r["trade_decision_id"]) for r in rows] == [
            ("acct-a", "external", None)
        ]
        order = next(o for o in sim.admin.orders("acct-a") if o["id"] == str(hand.id))
        assert order["status"] in ("new", "accepted")  # still working: never cancelled
        assert (
            await fetch(
                head_dsn,
                "SELECT 1 FROM executions WHERE alpaca_account_label = 'acct-b' AND origin = "
                "'external'",
            )
            == []
        )
    finally:
        await a.close()


async def test_a_fill_nobody_here_knows_of_is_position_drift(
    sim: RunningSimulator, repo: Repository
) -> None:
    a = broker(sim, "acct-a")
    try:
        held = position_quantities(await a.positions())
        implied = await repo.implied_positions("acct-a")
        baseline = position_drift(held, implied, {})  # what the broker holds beyond ours, now
        assert position_drift(held, implied, baseline) == {}
        order = market(sim, "acct-a", cid("drift"), 1)  # by hand, never recorded here
        await broker_filled(sim, "acct-a", str(order.id))
        held = position_quantities(await a.positions())
        drift = position_drift(held, await repo.implied_positions("acct-a"), baseline)
        assert drift == {"AAPL": Decimal(1)}
        b = broker(sim, "acct-b")
        try:
            b_held = position_quantities(await b.positions())
            b_implied = await repo.implied_positions("acct-b")
            assert "AAPL" not in position_drift(
                b_held, b_implied, position_drift(b_held, b_implied, {})
            )
        finally:
            await b.close()
    finally:
        await a.close()


async def test_replayed_fills_carry_the_quantity_weighted_average_price(
    repo: Repository, head_dsn: str
) -> None:
    """Two limit buys fill in parts at two prices (200, then 150) while no trade update is
    applied; after the replay each execution's average price is the quantity-weighted average
    of its fills, as the broker's. The second order's first fill came through a trade update
    (with the order's average then): the replay weights the rest on top of it."""
    with RunningSimulator(
        {"accounts": ACCOUNTS}, seed=9, partial_fill_prob=1.0, fill_delay_ms=400
    ) as slow:
        slow.admin.set_prices({"MSFT": "200"})
        a = broker(slow, "acct-a")
        try:
            apply = applier(repo).apply_updates
            await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)  # cursor now
            client = slow.trading_client("acct-a")
            orders = [
                client.submit_order(
                    LimitOrderRequest(
                        symbol="MSFT",
                        qty=40,
                        side=OrderSide.BUY,
                        time_in_force=TimeInForce.DAY,
                        limit_price=200,
                        client_order_id=cid(f"avg{n}"),
                    )
                )
                for n in range(2)
            ]
            for order in orders:
                await record_order(repo, "acct-a", order)
            ids = [str(o.id) for o in orders]

            def states() -> list[str]:
                by_id = {o["id"]: o for o in slow.admin.orders("acct-a")}
                return [str(by_id[i]["status"]) for i in ids]

            for _ in range(200):  # the first parts fill at 200 ...
                if all(s == "partially_filled" for s in states()):
                    break
                await asyncio.sleep(0.01)
            slow.admin.set_prices({"MSFT": "300"})  # ... the rest waits above the limit ...
            assert states() == ["partially_filled", "partially_filled"]
            slow.admin.set_prices({"MSFT": "150"})  # ... and fills at 150
            filled = [await broker_filled(slow, "acct-a", i) for i in ids]
            activities = [
                x for x in await a.fill_activities(None, 100, "asc") if x["order_id"] in ids
            ]
            assert {Decimal(x["price"]) for x in activities} == {Decimal(200), Decimal(150)}

            # The second order's first fill arrives as a trade update with the average then.
            first = next(x for x in activities if x["order_id"] == ids[1])
            live = activity_update("acct-a", first).model_copy(
                update={"fingerprint": "a" * 64, "filled_avg_price": Decimal(first["price"])}
            )
            await applier(repo).apply_updates([live])

            report = await replay_fills("acct-a", a, repo, apply, baseline=no_baseline)
            assert report.fills == len(activities)
            for order_id, broker_order in zip(ids, filled, strict=True):
                fills = [x for x in activities if x["order_id"] == order_id]
                weighted = sum(Decimal(x["qty"]) * Decimal(x["price"]) for x in fills) / sum(
                    Decimal(x["qty"]) for x in fills
                )
                execution = await repo.get_execution("acct-a", alpaca_order_id=order_id)
                assert execution is not None and execution.status == "filled"
                assert execution.filled_qty == Decimal(40)
                assert execution.avg_fill_price is not None
                got = execution.avg_fill_price.quantize(Decimal("0.0001"))
                assert got == weighted.quantize(Decimal("0.0001"))
                assert got == Decimal(broker_order["filled_avg_price"]).quantize(Decimal("0.0001"))
                assert Decimal(150) < got < Decimal(200)  # really weighted, not the last price
        finally:
            await a.close()
