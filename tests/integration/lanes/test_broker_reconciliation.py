"""Reconciliation at start, end to end: a real worker, real Kafka and Postgres, the simulator.

While the worker is down, alpha's earlier order fills, an order is placed by hand at alpha's
broker account (a resting limit order: adopted as `external`, never cancelled) and another one by
hand fills at once (a position this system's fills do not explain: drift), and decisions arrive
for alpha and beta. alpha's broker answers its first reads with 500s, so its start-up
reconciliation fails and is retried: its decision waits (parked, not rejected) and is traded once
alpha is reconciled, while beta is reconciled and trades without waiting for alpha.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from alpaca.trading.enums import OrderSide, TimeInForce
from alpaca.trading.requests import LimitOrderRequest, MarketOrderRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.lanes.helpers import (
    broker_orders,
    decision,
    decision_row,
    lane_env,
    prepare_topics,
    registry,
    send,
    simulator,
    start_worker,
    wait_executed,
    wait_until,
)
from tests.support.pg import fetch
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


def lane(worker: Worker, label: str) -> dict[str, Any]:
    body: dict[str, Any] = worker.get("/trading/status").json()
    return dict(body["accounts"][label])


class Watch:
    """Polls a worker's status and readiness from its start: what each lane went through."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.states: dict[str, list[str]] = {"alpha": [], "beta": []}
        self.ready_at: dict[str, float] = {}
        self.readiness: list[str] = []
        self._stop = False
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop:
            try:
                status = await asyncio.to_thread(self.worker.get, "/trading/status", 1.0)
                ready = await asyncio.to_thread(self.worker.get, "/readyz", 1.0)
            except (requests.RequestException, ValueError):  # not listening yet
                await asyncio.sleep(0.1)
                continue
            now = time.time()
            for label, seen in self.states.items():
                state = status.json()["accounts"][label].get("reconciliation", {}).get("state")
                if state and (not seen or seen[-1] != state):
                    seen.append(state)
                if state == "ready":
                    self.ready_at.setdefault(label, now)
            check = ready.json().get("checks", {}).get("reconciliation", {})
            if check.get("detail") and check["detail"] not in self.readiness:
                self.readiness.append(check["detail"])
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self._stop = True
        await self.task


async def test_lanes_reconcile_with_the_broker_before_they_trade(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    sim = simulator(["alpha", "beta"])
    try:
        accounts = registry(sim.url, ["alpha", "beta"])
        # The first worker's REST reconciler never runs: what it leaves is repaired at start.
        env = lane_env("recon", head_dsn, accounts, TRADING_RECONCILE_INTERVAL_SECONDS="3600")
        await prepare_topics(stack, env)
        first = start_worker(stack, env, tmp_path / "w1", "recon-1")
        workers.append(first)
        d1, d2 = decision("alpha"), decision("beta", "MSFT")
        await send(stack, env, d1, d2)
        for d in (d1, d2):
            await wait_executed(head_dsn, d)
        cursors = await fetch(head_dsn, "SELECT account_label FROM broker_fill_cursors")
        assert sorted(r["account_label"] for r in cursors) == ["alpha", "beta"]
        first.stop()
        [d1_row] = await fetch(
            head_dsn, "SELECT status FROM executions WHERE client_order_id = $1", d1.decision_hash
        )
        assert d1_row["status"] != "filled"  # filled at the broker, never seen here

        # ---- while no worker runs
        client = sim.trading_client("alpha")
        resting = client.submit_order(
            LimitOrderRequest(
                symbol="AAPL",
                qty=2,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                limit_price=50,
                client_order_id="by-hand-resting",
            )
        )
        filled_by_hand = client.submit_order(
            MarketOrderRequest(
                symbol="MSFT",
                qty=1,
                side=OrderSide.BUY,
                time_in_force=TimeInForce.DAY,
                client_order_id="by-hand-filled",
            )
        )
        d3, d4 = decision("alpha"), decision("beta")
        await send(stack, env, d3, d4)
        sim.admin.set_faults("alpha", {"http_5xx": 3, "methods": ["GET"]})

        # ---- the second worker
        env2 = {
            **env,
            "TRADING_RECONCILE_INTERVAL_SECONDS": "2",
            "TORGHUT_POSITION_DRIFT_GRACE_SECONDS": "0",
        }
        second = Worker(stack, env2, tmp_path / "w2", name="recon-2").start()
        workers.append(second)
        watch = Watch(second)
        second.wait_ready(timeout=120)
        d4_rows = await wait_executed(head_dsn, d4, timeout=60)
        d3_rows = await wait_executed(head_dsn, d3, timeout=60)
        await watch.stop()

        # alpha reconciled (after retries) before it traded; beta never waited for alpha
        assert watch.states["alpha"][-1] == "ready" and "retrying" in watch.states["alpha"]
        assert watch.states["beta"][-1] == "ready" and "retrying" not in watch.states["beta"]
        assert any("alpha" in detail for detail in watch.readiness)  # /readyz named it
        [d4_exec] = await fetch(
            head_dsn,
            "SELECT extract(epoch FROM created_at) AS at FROM executions "
            "WHERE client_order_id = $1",
            d4.decision_hash,
        )
        assert float(d4_exec["at"]) < watch.ready_at["alpha"]
        [d3_exec] = await fetch(
            head_dsn,
            "SELECT extract(epoch FROM created_at) AS at FROM executions "
            "WHERE client_order_id = $1",
            d3.decision_hash,
        )
        assert float(d3_exec["at"]) >= watch.ready_at["alpha"] - 1.0  # traded once reconciled
        # d3 waited: parked, never rejected; exactly one order each
        row = await decision_row(head_dsn, d3)
        assert row is not None and row["status"] != "rejected"
        assert [r["alpaca_account_label"] for r in d3_rows] == ["alpha"]
        assert [r["alpaca_account_label"] for r in d4_rows] == ["beta"]
        assert len(broker_orders(sim, d3)) == 1 and len(broker_orders(sim, d4)) == 1

        alpha, beta = lane(second, "alpha"), lane(second, "beta")
        result = alpha["reconciliation"]["last_result"]
        assert result["external_adopted"] == 1 and result["executions_fixed"] >= 1
        assert result["fills_replayed"] >= 2  # d1's fills and the one by hand
        assert beta["reconciliation"]["last_result"]["external_adopted"] == 0

        # the order nobody here placed: adopted under alpha, still working at the broker
        adopted = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, origin, trade_decision_id FROM executions "
            "WHERE alpaca_order_id = $1",
            str(resting.id),
        )
        assert [tuple(r) for r in adopted] == [("alpha", "external", None)]
        still = next(o for o in sim.admin.orders("alpha") if o["id"] == str(resting.id))
        assert still["status"] in ("new", "accepted")
        # d1, filled while no worker ran, is filled here now
        [d1_row] = await fetch(
            head_dsn, "SELECT status FROM executions WHERE client_order_id = $1", d1.decision_hash
        )
        assert d1_row["status"] == "filled"
        # the by-hand fill was replayed, under alpha only
        replayed = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, source_topic FROM execution_order_events "
            "WHERE alpaca_order_id = $1",
            str(filled_by_hand.id),
        )
        assert [tuple(r) for r in replayed] == [("alpha", "broker:activities/FILL")]

        # drift: alpha holds 1 MSFT no fill of this system explains; beta none
        async def drifted() -> dict[str, Any] | None:
            got = lane(second, "alpha")
            return got if got["position_drift"] == {"MSFT": "1"} else None

        alpha = await wait_until(drifted, 20, "alpha drift on MSFT")
        assert "position_drift" in alpha["problems"]
        beta = lane(second, "beta")
        assert beta["position_drift"] == {} and "position_drift" not in beta["problems"]
        metrics = second.get("/metrics").text
        drift = {
            tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
            if s.name == "torghut_position_drift"
        }
        assert drift == {(("account", "alpha"), ("symbol", "MSFT")): 1.0}

        # nothing of one account under the other
        labels = await fetch(
            head_dsn,
            "SELECT client_order_id, alpaca_account_label FROM executions ORDER BY id",
        )
        by_account = {r["client_order_id"]: r["alpaca_account_label"] for r in labels}
        assert by_account[d1.decision_hash] == by_account[d3.decision_hash] == "alpha"
        assert by_account[d2.decision_hash] == by_account[d4.decision_hash] == "beta"
        assert by_account["by-hand-resting"] == "alpha"
        assert sorted(k for k, v in by_account.items() if v == "beta") == sorted(
            [d2.decision_hash, d4.decision_hash]
        )
        events = await fetch(
            head_dsn,
            "SELECT DISTINCT alpaca_account_label, alpaca_order_id FROM execution_order_events",
        )
        beta_orders = {o["id"] for o in sim.admin.orders("beta")}
        for r in events:
            assert (r["alpaca_order_id"] in beta_orders) == (r["alpaca_account_label"] == "beta")
        tokens = await fetch(
            head_dsn, "SELECT account_label, page_token FROM broker_fill_cursors ORDER BY 1"
        )
        fills = {
            label: sim.trading_client(label).get(
                "/account/activities/FILL", {"direction": "asc", "page_size": 100}
            )
            for label in ("alpha", "beta")
        }
        assert [r["account_label"] for r in tokens] == ["alpha", "beta"]
        for r in tokens:  # each account's cursor is one of its own fills
            own = [f["id"] for f in fills[r["account_label"]]]
            other = [f["id"] for f in fills["beta" if r["account_label"] == "alpha" else "alpha"]]
            assert r["page_token"] in own and r["page_token"] not in other
        by_hand = next(f["id"] for f in fills["alpha"] if f["order_id"] == str(filled_by_hand.id))
        assert tokens[0]["page_token"] >= by_hand  # alpha's start-up replay read past it
        assert second.get("/readyz").json()["checks"]["reconciliation"]["ok"]
    finally:
        sim.stop()
