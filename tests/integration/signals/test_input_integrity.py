"""A TA signal dated 9999-12-31 against a real worker, real Kafka and Postgres and the simulator:
it places no order, it is a dead letter, and the symbol keeps trading afterwards (issue #16)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.codecs import decode_dead_letter
from tests.integration.lanes.helpers import (
    lane_env,
    prepare_topics,
    registry,
    simulator,
    start_worker,
    wait_until,
)
from tests.integration.persistence.conftest import head_dsn, head_template
from tests.integration.signals.helpers import (
    SHAPES,
    avro_record,
    expected_hashes,
    read_topic,
    signal,
)
from tests.support.kafka import produce
from tests.support.pg import fetch
from tests.support.stack import StackInfo
from tests.support.worker import Worker

__all__ = ["head_dsn", "head_template"]  # fixtures

pytestmark = pytest.mark.integration

LANES = ("alpha", "beta")
STRATEGY_ENV = {"TRADING_STRATEGY_RUNTIME_MODE": "plugin_v3"}
FAR_FUTURE = datetime(9999, 12, 31, tzinfo=UTC)


async def test_a_signal_dated_9999_places_no_order_and_the_symbol_keeps_trading(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    sim = simulator(list(LANES))
    try:
        env = lane_env("integrity", head_dsn, registry(sim.url, list(LANES)), **STRATEGY_ENV)
        await prepare_topics(stack, env)
        workers.append(start_worker(stack, env, tmp_path / "worker", "integrity"))

        now = datetime.now(UTC).replace(microsecond=0)
        before = signal("AAPL", 1, SHAPES[0], at=now - timedelta(seconds=2))  # a momentum buy
        poison = signal("AAPL", 2, SHAPES[0], at=FAR_FUTURE)  # would buy too, if it were read
        after = signal("AAPL", 3, SHAPES[0], at=now)
        records = [avro_record(s) for s in (before, poison, after)]
        await produce(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], records)

        expected = expected_hashes([before, after], LANES, STRATEGY_ENV)
        assert {label for label, _ in expected} == set(LANES), "the fixture must trade"

        async def orders() -> set[tuple[str, str]] | None:
            placed = {
                (label, o["client_order_id"])
                for label in LANES
                for o in await asyncio.to_thread(sim.admin.orders, label)
            }
            return placed if len(placed) >= len(expected) else None

        placed = await wait_until(orders, 60, "orders for the current signals")
        await asyncio.sleep(2)  # anything the poison would have caused has had time to arrive
        assert placed == set(expected) == (await orders())  # those of the current signals only

        (dead,) = await read_topic(stack.bootstrap, env["TORGHUT_DLQ_TOPIC"], expect=1, settle=1)
        letter = decode_dead_letter(dead.value)
        assert letter.reason == "event_time_in_future"
        assert letter.value == records[1][1] and letter.key == b"AAPL"

        rows = await fetch(
            head_dsn,
            "SELECT alpaca_account_label, event_ts FROM trade_decisions ORDER BY event_ts",
        )
        assert {r["event_ts"] for r in rows} == {before.event_ts, after.event_ts}
        assert all(r["event_ts"].year < 9999 for r in rows)
    finally:
        sim.stop()
