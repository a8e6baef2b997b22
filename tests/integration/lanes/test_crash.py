"""Crash the worker at every step of the submit path; after each restart the decision goes on,
and in the end there is exactly one broker order and one execution for it.

One decision walks the whole chain: each restart gets it redelivered (its offset was never
committed) and crashes at the next step. The last worker runs with the global kill switch on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.execution.crash import CRASH_EXIT_CODE, CRASH_POINTS
from tests.integration.lanes.helpers import (
    broker_orders,
    decision,
    decision_row,
    executions,
    lane_env,
    prepare_topics,
    reasons,
    registry,
    send,
    simulator,
    start_worker,
    topic_values,
    wait_executed,
    wait_status,
)
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

# (orders at the broker, executions rows) for the decision once the worker died at the step.
AFTER_CRASH = {
    "before_ledger_write": (0, 0),
    "after_submit": (1, 0),
    "before_persist": (1, 0),
    "before_commit": (1, 1),
}


async def test_crash_at_every_step_gives_one_order_and_one_execution(
    stack: StackInfo, head_dsn: str, tmp_path, workers: list[Worker]
) -> None:
    assert tuple(AFTER_CRASH) == CRASH_POINTS
    with simulator(["alpha"]) as sim:
        env = lane_env("crash", head_dsn, registry(sim.url, ["alpha"]))
        await prepare_topics(stack, env)
        d = decision("alpha")
        for n, step in enumerate(CRASH_POINTS):
            worker = Worker(stack, {**env, "TORGHUT_CRASH_AT": step}, tmp_path, name=step)
            workers.append(worker.start())
            if n == 0:
                worker.wait_ready(timeout=120)
                await send(stack, env, d)
            assert worker.wait_exit(timeout=120) == CRASH_EXIT_CODE, worker.tail()
            assert f"crash point {step}" in worker.output
            orders, rows = AFTER_CRASH[step]
            assert len(broker_orders(sim, d)) == orders, step
            assert len(await executions(head_dsn, d)) == rows, step

        final = start_worker(
            stack, {**env, "TRADING_KILL_SWITCH_ENABLED": "true"}, tmp_path, "final"
        )
        workers.append(final)
        later = decision("alpha")
        await send(stack, env, later)
        row = await wait_status(head_dsn, later, "rejected")  # processed after d (same lane)
        assert reasons(row) == ["kill_switch_enabled"]
        assert len(broker_orders(sim, d)) == 1
        assert len(sim.admin.orders("alpha")) == 1
        assert len(await executions(head_dsn, d)) == 1
        row = await decision_row(head_dsn, d)
        assert row is not None and row["status"] in ("submitted", "partially_filled", "filled")


async def ledger_states(stack: StackInfo, env: dict[str, str]) -> dict[str, set[str]]:
    """Decision hash → every ledger state durably written for it (from the changelog)."""
    topic = f"{env['TORGHUT_APP_ID']}-lane-ledger-changelog"
    states: dict[str, set[str]] = {}
    for value in await topic_values(stack, topic):
        if not value.startswith(b"{"):
            continue  # a signal slot (its value is the decision hash), not an entry
        entry = json.loads(value)
        states.setdefault(entry["decision"]["decision_hash"], set()).add(entry["state"])
    return states


async def test_crash_with_several_accounts_in_flight_loses_and_duplicates_nothing(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    """Accounts run concurrently: the crash (when alpha's POST returns) hits the slow accounts
    mid-POST (accepted at the broker, ledger in `submitting`) with their next decisions queued.
    After the restart every decision has exactly one order and one execution."""
    slow, labels = ["beta", "gamma", "delta"], ["beta", "gamma", "delta", "alpha"]
    with simulator(labels) as sim:
        env = lane_env("crash-many", head_dsn, registry(sim.url, labels))
        await prepare_topics(stack, env)
        for label in slow:
            sim.admin.set_faults(label, delay_post_response_ms=3000)
        sim.admin.set_faults("alpha", delay_post_response_ms=1000)
        firsts = [decision(label) for label in labels]  # alpha's is read last
        seconds = [decision(label, "MSFT") for label in labels]
        crashing = Worker(stack, {**env, "TORGHUT_CRASH_AT": "after_submit"}, tmp_path, "many")
        workers.append(crashing.start())
        crashing.wait_ready(timeout=120)
        await send(stack, env, *firsts, *seconds)
        assert crashing.wait_exit(timeout=120) == CRASH_EXIT_CODE, crashing.tail()

        states = await ledger_states(stack, env)
        unacked = [states.get(d.decision_hash, set()) for d in firsts]
        in_flight = [s for s in unacked if "submitting" in s and "submitted" not in s]
        assert len(in_flight) == len(labels), states  # all four POSTs were out at once
        assert not any(d.decision_hash in states for d in seconds)  # each account in order
        for label in labels:
            sim.admin.clear_faults(label)

        workers.append(start_worker(stack, env, tmp_path, "many-after"))
        for d in firsts + seconds:
            await wait_executed(head_dsn, d, timeout=60)
        for d in firsts + seconds:
            assert len(broker_orders(sim, d)) == 1, d.account_label
            assert len(await executions(head_dsn, d)) == 1, d.account_label
        for label in labels:
            assert len(sim.admin.orders(label)) == 2, label
