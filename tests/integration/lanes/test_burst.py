"""One account's burst: 60 decisions at once, more than its lane takes in flight (16).

A real worker, real Kafka and Postgres, the simulator over HTTP (alpha's POSTs answered after
40 ms, so alpha stays busy; the request budget is raised so that it does not pace the burst).
The decisions the lane has no room for are deferred (parked in the ledger, acked) and re-driven
through the lane retry topic as slots free up. Asserted:

- every decision gets exactly one broker order and one executions row;
- the burst really overflowed (deferrals in the ledger changelog), and the lane retry topic holds
  exactly one re-drive per deferred decision: no deferred decision went round a second time, so
  none waited for the 30 s hold of parked decisions (`RETRY_HOLD`); the lane's status agrees
  (re-drives by reason `deferred` only, none `parked`, none found the lane full again);
- the last of the 60 was acknowledged by the broker well within `RETRY_HOLD`;
- beta, trading one decision every 0.2 s meanwhile, is never deferred and stays quick.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.codecs import decode_decision
from schemas.decision import AccountDecision
from streams.execution.lane import DEFERRED
from streams.execution.orchestration import MAX_PER_ACCOUNT
from streams.execution.service import RETRY_HOLD
from streams.settings import Settings
from streams.topics import lane_retries_topic_name
from tests.integration.lanes.helpers import (
    broker_orders,
    decision,
    executions,
    lane_env,
    prepare_topics,
    registry,
    send,
    simulator,
    start_worker,
    topic_values,
    wait_executed,
)
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

BURST = 60
BETA_EVERY = 0.2
BETA_COUNT = 15
ALPHA_POST_DELAY_MS = 40
BETA_BOUND_SECONDS = 3.0


async def ledger_writes(stack: StackInfo, env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Decision hash → every ledger entry written for it, in changelog order."""
    topic = f"{env['TORGHUT_APP_ID']}-lane-ledger-changelog"
    out: dict[str, list[dict[str, Any]]] = {}
    for value in await topic_values(stack, topic, idle=1.5):
        if value.startswith(b"{"):  # not a signal slot
            entry = json.loads(value)
            out.setdefault(entry["decision"]["decision_hash"], []).append(entry)
    return out


def counts(worker: Worker, label: str) -> dict[str, Any]:
    lane: dict[str, Any] = worker.get("/trading/status").json()["accounts"][label]
    return {**lane["counts"], "backlog": lane["backlog"]}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_a_burst_of_one_account_is_re_driven_as_it_has_room_without_a_hold_round(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    with simulator(["alpha", "beta"]) as sim:
        # The request budget (190/min by default) would pace alpha's 60 orders over ~19 s.
        env = lane_env(
            "burst",
            head_dsn,
            registry(sim.url, ["alpha", "beta"]),
            TRADING_BROKER_RATE_LIMIT_PER_MINUTE="100000",
        )
        await prepare_topics(stack, env)
        worker = start_worker(stack, env, tmp_path, "burst")
        workers.append(worker)
        try:
            await burst_and_check(stack, env, head_dsn, sim, worker)
        finally:
            (tmp_path / "worker.log").write_text(worker.output)  # for a failure's post-mortem


async def burst_and_check(
    stack: StackInfo, env: dict[str, str], head_dsn: str, sim: Any, worker: Worker
) -> None:
    # Warm-up: both lanes reconciled, snapshots fetched, trading.
    warm = [decision("alpha", notional="100"), decision("beta", notional="100")]
    await send(stack, env, *warm)
    for d in warm:
        await wait_executed(head_dsn, d, timeout=90)
    before = counts(worker, "alpha")
    sim.admin.set_faults("alpha", delay_post_response_ms=ALPHA_POST_DELAY_MS)

    burst = [decision("alpha", notional="100") for _ in range(BURST)]
    betas: list[AccountDecision] = []
    sent_at = datetime.now(UTC)
    await send(stack, env, *burst)  # all at once

    async def beta_meanwhile() -> None:
        for _ in range(BETA_COUNT):
            d = decision("beta", notional="100")
            betas.append(d)
            await send(stack, env, d)
            await asyncio.sleep(BETA_EVERY)

    started = time.monotonic()
    await beta_meanwhile()
    for d in burst + betas:
        await wait_executed(head_dsn, d, timeout=90)
    took = time.monotonic() - started
    sim.admin.clear_faults("alpha")

    for d in burst + betas:
        assert len(broker_orders(sim, d)) == 1, d.decision_hash
        rows = await executions(head_dsn, d)
        assert [r["alpaca_account_label"] for r in rows] == [d.account_label]

    writes = await ledger_writes(stack, env)
    deferred = [
        d.decision_hash
        for d in burst
        if any(e["last_error"] == DEFERRED for e in writes[d.decision_hash])
    ]
    retry_topic = lane_retries_topic_name(Settings(TORGHUT_APP_ID=env["TORGHUT_APP_ID"]))  # type: ignore[call-arg]
    ours = {d.decision_hash for d in burst + betas}
    retries = [
        h
        for h in (decode_decision(v).decision_hash for v in await topic_values(stack, retry_topic))
        if h in ours  # (a warm-up decision may have waited for the start-up reconciliation)
    ]
    await asyncio.sleep(1.5)  # a lanes upkeep tick shows the backlog on the status
    after = counts(worker, "alpha")
    submitted = [at(writes[d.decision_hash][-1]["submitted_at"]) for d in burst]
    last = max(submitted) - sent_at
    beta_lat = [
        (at(writes[d.decision_hash][-1]["submitted_at"]) - d.emitted_at).total_seconds()
        for d in betas
    ]
    print(
        f"\n[burst] {BURST} alpha decisions in {took:.1f}s; deferred {len(deferred)}; "
        f"retry records {len(retries)}; last acknowledged {last.total_seconds():.1f}s after "
        f"the burst; beta max {max(beta_lat):.2f}s; alpha status {after}"
    )

    # It overflowed: everything beyond the lane's in-flight bound was deferred.
    assert len(deferred) >= BURST - MAX_PER_ACCOUNT - 5, len(deferred)
    # One re-drive per deferred decision, oldest first, and nothing else on the retry topic.
    assert retries == deferred
    assert after["deferrals"] - before["deferrals"] == len(deferred)
    assert after["redrives"]["deferred"] - before["redrives"]["deferred"] == len(deferred)
    assert after["redrives"]["parked"] == before["redrives"]["parked"]
    assert after["deferred_again"] == 0 and after["backlog"] == 0
    assert last < RETRY_HOLD / 2, last
    # Beta was never held up by alpha's burst.
    assert not any(e["last_error"] == DEFERRED for d in betas for e in writes[d.decision_hash])
    assert max(beta_lat) < BETA_BOUND_SECONDS, beta_lat
