"""Consumer lag as operators see it: the app's `lag` command and Kafka's own tooling read the same
committed offsets; `/metrics` parses and carries the series. (Burrow's view: test_burrow.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.observability.helpers import cli, json_line, until, until_async
from tests.integration.observability.lagtools import (
    broker_offsets,
    consumer_groups_lag,
)
from tests.support.kafka import create_topics, produce
from tests.support.stack import StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

NAMED_FAMILIES = {
    "torghut_signal_to_broker_ack_seconds",
    "torghut_broker_call_seconds",
    "torghut_broker_errors",
    "torghut_lane_up",
    "torghut_consumer_lag_records",
    "torghut_consumer_lag_seconds",
    "torghut_oldest_unprocessed_message_age_seconds",
    "torghut_table_recovery_remaining_records",
    "torghut_dead_letters",
}


def records(n: int, tag: str) -> list[tuple[bytes, bytes]]:
    # Not a valid signal: each one is dead-lettered, which still moves the group's offsets.
    return [(f"SYM{i % 7}".encode(), f"{tag}-{i}".encode()) for i in range(n)]


def scrape(worker: Worker) -> dict[str, Any]:
    response = worker.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(response.text)}


async def test_lag_is_the_same_from_the_app_and_kafka_tools(
    stack: StackInfo, workers: list[Worker], tmp_path: Path
) -> None:
    env = app_env("obs-lag", TORGHUT_MONITOR_INTERVAL_SECONDS="1")
    group, signals = env["TORGHUT_APP_ID"], env["TORGHUT_SIGNALS_TOPIC"]
    await create_topics(
        stack.bootstrap, app_topics(env), partitions=4, compact=[env["TORGHUT_CONTROL_TOPIC"]]
    )

    worker = Worker(stack, env, tmp_path / "data").start()
    workers.append(worker)
    worker.wait_ready()
    await produce(stack.bootstrap, signals, records(40, "warm"))

    # The group commits every partition it consumed; the in-app gauges follow.
    async def caught_up() -> bool:
        offsets = await broker_offsets(stack.bootstrap, group, signals)
        return all(committed == end for committed, end in offsets.values())

    await until_async(caught_up, 60, "the group to commit the warm-up records")

    def settled_scrape() -> dict[str, Any] | None:
        families = scrape(worker)
        zero = {
            int(s.labels["partition"])
            for s in families["torghut_consumer_lag_records"].samples
            if s.labels["topic"] == signals and s.value == 0
        }
        return families if zero == set(range(4)) else None

    families = until(settled_scrape, 30, "zero consumer lag gauges for all signals partitions")
    assert families.keys() >= NAMED_FAMILIES, NAMED_FAMILIES - families.keys()
    assert families["torghut_oldest_unprocessed_message_age_seconds"].samples[0].value == 0
    assert families["torghut_ready"].samples[0].value == 1

    # Load arrives while the group is not consuming: lag rises everywhere it is observed.
    worker.stop()
    await produce(stack.bootstrap, signals, records(200, "load"))
    offsets = await broker_offsets(stack.bootstrap, group, signals)
    assert sum(end - (committed or 0) for committed, end in offsets.values()) == 200

    reported = json_line(cli(stack, env, "lag", "--json"))
    assert reported["group"] == group
    by_tp = {(r["topic"], r["partition"]): r for r in reported["partitions"]}
    for tp, (committed, end) in offsets.items():
        assert (by_tp[tp]["committed"], by_tp[tp]["end"]) == (committed, end), tp
        assert by_tp[tp]["lag"] == end - (committed or 0)
        if end - (committed or 0) > 0:
            assert by_tp[tp]["lag_seconds"] > 0

    assert sum(v for (t, _), v in consumer_groups_lag(stack, group).items() if t == signals) == 200

    # The worker comes back and works the backlog off: every view returns to zero.
    worker = Worker(stack, env, tmp_path / "data", name="worker-2").start()
    workers.append(worker)
    worker.wait_ready()
    until(
        lambda: (
            sum(v for (t, _), v in consumer_groups_lag(stack, group).items() if t == signals) == 0
        ),
        90,
        "kafka-consumer-groups LAG to return to 0",
        step=1.0,
    )
