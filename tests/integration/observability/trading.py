"""One running worker with traffic on every kind of lane, for the operator-tool tests (Prometheus,
the browser): alpha trades through the simulator, beta's kill switch is engaged by its flag (its
decision is rejected), gamma's keys are wrong (an auth error), a corrupt signal is a dead letter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.integration.lanes.helpers import (
    decision,
    lane_env,
    prepare_topics,
    registry,
    send,
    simulator,
    wait_executed,
    wait_status,
)
from tests.integration.observability.helpers import until
from tests.support.kafka import produce
from tests.support.stack import StackInfo, unique
from tests.support.worker import Worker

SECRETS = ("AK-WRONG-gamma", "SK-WRONG-gamma", "SK-ALPHA-secret", "SK-BETA-secret")
LANES = ("alpha", "beta", "gamma")


@dataclass
class TradingWorker:
    stack: StackInfo
    dsn: str
    worker: Worker
    env: dict[str, str]

    def trade(self) -> None:
        """One round of traffic: an order, a kill-switch rejection, an auth error, a dead letter."""

        async def run() -> None:
            good, stopped, bad = decision("alpha"), decision("beta"), decision("gamma")
            await send(self.stack, self.env, good, stopped, bad)
            await produce(
                self.stack.bootstrap, self.env["TORGHUT_SIGNALS_TOPIC"], [(b"AAPL", b"\x02junk")]
            )
            await wait_executed(self.dsn, good)
            await wait_status(self.dsn, stopped, "rejected")

        asyncio.run(run())


async def _database(stack: StackInfo, name: str, template: str | None) -> None:
    admin = await asyncpg.connect(stack.database("postgres"))
    try:
        if template is None:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        else:
            await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await admin.close()


def trading_worker(stack: StackInfo, head_template: str, folder: Path) -> Iterator[TradingWorker]:
    name = unique("ops").replace("-", "_")
    asyncio.run(_database(stack, name, head_template))
    dsn = stack.database(name)
    sim = simulator(["alpha", "beta"])
    worker: Worker | None = None
    try:
        flags = folder / "flags.json"
        flags.write_text(json.dumps({"torghut:beta": {"torghut_trading_kill_switch": True}}))
        env = lane_env(
            "obs-ops",
            dsn,
            registry(sim.url, ["alpha", "beta"], bad=["gamma"]),
            TRADING_FLAGS_FILE=str(flags),
            TORGHUT_MONITOR_INTERVAL_SECONDS="1",
        )
        asyncio.run(prepare_topics(stack, env))
        worker = Worker(stack, env, folder / "data", name="ops-worker").start()
        worker.wait_ready(timeout=120)

        ops = TradingWorker(stack, dsn, worker, env)
        ops.trade()
        until(
            lambda: worker.get("/trading/health").status_code == 503 if worker else None,
            30,
            "gamma's auth error on /trading/health",
        )
        yield ops
    finally:
        if worker is not None:
            worker.stop()
        sim.stop()
        asyncio.run(_database(stack, name, None))
