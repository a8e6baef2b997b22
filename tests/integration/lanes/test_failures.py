"""A poison row for one decision (a NUL character Postgres refuses): only that decision is
rejected (`persist_failed:<sqlstate>`), nothing is sent for it, and the account keeps trading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
    topic_values,
    wait_executed,
    wait_until,
)
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


async def test_a_poison_row_rejects_only_its_decision(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    with simulator(["alpha"]) as sim:
        env = lane_env("poison", head_dsn, registry(sim.url, ["alpha"]))
        await prepare_topics(stack, env)
        workers.append(start_worker(stack, env, tmp_path, "poison"))
        bad = decision("alpha").model_copy(update={"strategy_id": "nul\x00here"})
        good = decision("alpha", "MSFT")
        await send(stack, env, bad, good)

        await wait_executed(head_dsn, good, timeout=60)
        topic = f"{env['TORGHUT_APP_ID']}-lane-ledger-changelog"

        async def closed() -> dict[str, object] | None:
            for value in await topic_values(stack, topic, idle=1.0):
                entry = json.loads(value) if value.startswith(b"{") else None
                if (
                    entry is not None
                    and entry["decision"]["decision_hash"] == bad.decision_hash
                    and entry["state"] == "rejected"
                    and entry["persisted"]
                ):
                    return dict(entry)
            return None

        entry = await wait_until(closed, 60, "the poison decision closed in the ledger")
        reasons = entry["reasons"]
        assert isinstance(reasons, list) and len(reasons) == 1, reasons
        reason = str(reasons[0])
        assert reason.startswith("persist_failed:22"), reason  # a data exception
        print(f"\n[poison] bad decision: {reason}, {entry['last_error']}")
        assert broker_orders(sim, bad) == []  # nothing was sent for it
        assert len(broker_orders(sim, good)) == 1
        assert await decision_row(head_dsn, bad) is None  # Postgres refused every row of it
        health = workers[0].get("/trading/health").json()
        print(f"[poison] health: {health}")
        assert "alpha" not in json.dumps(health.get("problems", {}))  # the lane is healthy
