"""A label is pinned to the broker account it first traded at (issue 16): the same label with
another account's keys stops its lane — no order at the other account, a clear error, a health
problem — while the other lanes keep trading."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.lanes.helpers import (
    KEYS,
    broker_orders,
    decision,
    lane_env,
    prepare_topics,
    reasons,
    send,
    simulator,
    start_worker,
    wait_executed,
    wait_status,
)
from tests.integration.persistence.conftest import _create, _drop
from tests.support.pg import fetch
from tests.support.stack import StackInfo, unique

pytestmark = pytest.mark.integration


def accounts(sim_url: str, keys_of: dict[str, str]) -> str:
    """TRADING_ACCOUNTS_JSON: each label with the simulator keys of `keys_of[label]`."""
    return json.dumps(
        [
            {
                "label": label,
                "mode": "paper",
                "api_key": KEYS[owner][0],
                "secret_key": KEYS[owner][1],
                "base_url": sim_url,
            }
            for label, owner in keys_of.items()
        ]
    )


@pytest.fixture
def dsn(stack: StackInfo, head_template: str) -> Iterator[str]:
    name = unique("pin").replace("-", "_")
    yield asyncio.run(_create(stack, name, template=head_template))
    asyncio.run(_drop(stack, name))


async def test_keys_of_another_account_stop_only_that_lane(
    stack: StackInfo, dsn: str, tmp_path: Path
) -> None:
    sim = simulator(["alpha", "beta", "gamma"])
    try:
        env = lane_env("pin", dsn, accounts(sim.url, {"alpha": "alpha", "beta": "beta"}))
        await prepare_topics(stack, env)
        worker = start_worker(stack, env, tmp_path / "w1", "pin-1")
        try:
            first = decision("alpha")
            await send(stack, env, first)
            await wait_executed(dsn, first)
        finally:
            worker.stop()
        pins = await fetch(dsn, "SELECT account_label, broker_account_number FROM account_pins")
        assert {r["account_label"] for r in pins} >= {"alpha"}

        # Someone swaps alpha's keys for gamma's (another broker account) and restarts.
        swapped = {
            **env,
            "TRADING_ACCOUNTS_JSON": accounts(sim.url, {"alpha": "gamma", "beta": "beta"}),
        }
        worker = start_worker(stack, swapped, tmp_path / "w2", "pin-2")
        try:
            refused, fine = decision("alpha"), decision("beta")
            await send(stack, swapped, refused, fine)
            row = await wait_status(dsn, refused, "rejected")
            assert reasons(row) == ["account_mismatch"]
            await wait_executed(dsn, fine)  # another account keeps trading
            gamma_ids = {o["client_order_id"] for o in sim.admin.orders("gamma")}
            assert refused.decision_hash not in gamma_ids and broker_orders(sim, refused) == []
            health = worker.get("/trading/health")
            assert health.status_code == 503 and health.json()["unhealthy"] == ["alpha"]
            assert "account_mismatch" in worker.output
            assert KEYS["gamma"][1] not in worker.output  # no secret in the error
        finally:
            worker.stop()
    finally:
        sim.stop()
