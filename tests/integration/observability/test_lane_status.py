"""A failing lane is reported by status, health, metrics, logs and `lanes`, while the healthy
lane keeps trading and stays healthy; `ledger` shows the healthy lane's decision."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.lanes.helpers import (
    decision,
    lane_env,
    prepare_topics,
    registry,
    send,
    simulator,
    wait_executed,
    wait_until,
)
from tests.integration.observability.helpers import cli
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

SECRETS = ("AK-WRONG-gamma", "SK-WRONG-gamma", "SK-ALPHA-secret")


def samples(worker: Worker) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = worker.get("/metrics").text
    assert not any(secret in text for secret in SECRETS)
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def test_failing_lane_is_reported_while_the_healthy_lane_stays_healthy(
    stack: StackInfo, head_dsn: str, workers: list[Worker], tmp_path: Path
) -> None:
    sim = simulator(["alpha"])
    try:
        env = lane_env(
            "obs-lanes",
            head_dsn,
            registry(sim.url, ["alpha"], bad=["gamma"]),
            TORGHUT_LOG_FORMAT="json",
            TORGHUT_MONITOR_INTERVAL_SECONDS="1",
        )
        await prepare_topics(stack, env)
        worker = Worker(stack, env, tmp_path / "data").start()
        workers.append(worker)
        worker.wait_ready(timeout=120)

        # Every configured lane is on the board before any traffic.
        before = worker.get("/trading/status").json()["accounts"]
        assert set(before) == {"alpha", "gamma"}
        assert all(lane["enabled"] and lane["mode"] == "paper" for lane in before.values())

        bad, good = decision("gamma"), decision("alpha")
        await send(stack, env, bad, good)
        await wait_executed(head_dsn, good)

        async def health() -> dict[str, Any] | None:
            response = worker.get("/trading/health")
            return response.json() if response.status_code == 503 else None

        body = await wait_until(health, 30, "/trading/health to report gamma")
        assert body["unhealthy"] == ["gamma"]
        assert "broker_error_auth" in body["problems"]["gamma"]
        assert body["lanes"] == {"alpha": True, "gamma": False}
        assert body["ta_stale"] is False  # the TA freshness view rides along (check off here)

        status = worker.get("/trading/status")
        assert not any(secret in status.text for secret in SECRETS)
        accounts = status.json()["accounts"]
        runtime = status.json()["strategy_runtime"]
        assert runtime["mode"] and {"id", "enabled"} <= set(runtime["strategies"][0])
        assert status.json()["clickhouse"]["freshness"]["enabled"] is False
        alpha, gamma = accounts["alpha"], accounts["gamma"]
        assert alpha["healthy"] and alpha["up"]
        assert alpha["last_submission"]["decision_hash"] == good.decision_hash
        assert alpha["last_error"] is None
        assert alpha["flags_available"] is True and alpha["kill_switch"]["engaged"] is False
        assert gamma["healthy"] is False and gamma["last_error"]["kind"] == "auth"
        assert gamma["last_decision"]["decision_hash"] == bad.decision_hash

        async def placed() -> bool:
            lane = worker.get("/trading/status").json()["accounts"]["alpha"]
            decisions = [p for p in lane["lag"] if p["topic"] == env["TORGHUT_DECISIONS_TOPIC"]]
            return lane["owned"] is True and len(decisions) == 1

        try:
            await wait_until(placed, 15, "alpha placed on this worker with its partition's lag")
        except AssertionError:
            raise AssertionError(worker.tail(80)) from None

        found = samples(worker)
        assert value(found, "torghut_lane_up", account="alpha") == 1
        assert value(found, "torghut_lane_healthy", account="alpha") == 1
        assert value(found, "torghut_lane_healthy", account="gamma") == 0
        assert (
            value(found, "torghut_broker_errors_total", account="gamma", **{"class": "auth"}) >= 1
        )
        assert value(found, "torghut_lane_orders_submitted_total", account="alpha") == 1
        assert value(found, "torghut_signal_to_broker_ack_seconds_count", account="alpha") == 1
        assert value(found, "torghut_lane_decisions_total", account="gamma") >= 1

        lanes = json.loads(cli(stack, env, "lanes", "--url", worker.url, "--json"))
        assert (lanes["alpha"]["healthy"], lanes["gamma"]["healthy"]) == (True, False)
        entries = [
            json.loads(line)
            for line in cli(
                stack, env, "ledger", "--account", "alpha", "--hash", good.decision_hash
            ).splitlines()
            if line.startswith("{")
        ]
        assert len(entries) == 1
        assert entries[0]["value"]["decision"]["decision_hash"] == good.decision_hash

        # JSON logs: one object per line, the account as a field, never a secret.
        assert not any(secret in worker.output for secret in SECRETS)
        logged = [json.loads(line) for line in worker.lines if line.startswith("{")]
        assert any(entry.get("account") == "gamma" for entry in logged)
    finally:
        sim.stop()
