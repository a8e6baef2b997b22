"""Foundation requirements proven on the first real agent and table:
(a) an agent round trip through the real broker, (b) a table restored from its changelog after
the worker's local RocksDB state is deleted, (c) `faust agents` / `faust tables` list the app."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from schemas.codecs import decode_decision
from tests.integration.signals.helpers import (
    BROKER_URL,
    SHAPES,
    T0,
    avro_record,
    expected_hashes,
    metric,
    read_topic,
    signal,
    until,
)
from tests.support.kafka import create_topics, produce
from tests.support.stack import ROOT, StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

LEGACY_BUY = SHAPES[4]  # macd > signal, RSI 30: the legacy rule buys


def single_account_env() -> dict[str, str]:
    return app_env(
        "found",
        TRADING_ACCOUNT_LABEL="paper",
        APCA_API_KEY_ID="found-key",
        APCA_API_SECRET_KEY="found-secret",
        APCA_API_BASE_URL=BROKER_URL,
    )


async def test_round_trip_and_table_restored_from_changelog_after_local_state_loss(
    stack: StackInfo, tmp_path: Path, workers: list[Worker]
) -> None:
    env = single_account_env()
    await create_topics(stack.bootstrap, app_topics(env), partitions=4)
    data_dir = tmp_path / "worker-data"
    s0, s1, s2 = (
        signal("AAPL", seq, LEGACY_BUY, at=T0 + timedelta(seconds=seq)) for seq in (9, 10, 11)
    )
    expected = expected_hashes([s1, s2], ["paper"], {})  # legacy mode, the default

    # (a) signal in -> decision out, through the real broker
    first = Worker(stack, env, data_dir, name="first").start()
    workers.append(first)
    first.wait_ready(timeout=120)
    await produce(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], [avro_record(s1)])
    (record,) = await read_topic(stack.bootstrap, env["TORGHUT_DECISIONS_TOPIC"], expect=1)
    decision = decode_decision(record.value)
    assert record.key == b"paper"
    assert (decision.account_label, decision.decision_hash) == expected[0]
    assert decision.strategy_id == "legacy-macd-rsi" and decision.signal_seq == 10

    # (b) stop, lose the local RocksDB state, restart: the watermark comes back from the changelog
    first.stop()
    assert any(data_dir.rglob("*signal-watermarks*")), "the table had local state"
    shutil.rmtree(data_dir)
    second = Worker(stack, env, data_dir, name="second").start()
    workers.append(second)
    second.wait_ready(timeout=120)
    # redelivered s1 (duplicate) and an older s0 (stale), then a newer s2 as a barrier
    await produce(
        stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], [avro_record(s) for s in (s1, s0, s2)]
    )
    records = await read_topic(
        stack.bootstrap, env["TORGHUT_DECISIONS_TOPIC"], expect=2, timeout=60, settle=3
    )
    assert [(r.key.decode(), decode_decision(r.value).decision_hash) for r in records] == expected

    def drops() -> tuple[float, float]:
        name = "torghut_signals_dropped_total"
        return metric(second, name, reason="duplicate"), metric(second, name, reason="stale")

    until(lambda: drops()[1] == 1, 30, "the stale signal counted")
    assert drops()[0] >= 1  # s1, and again s1 if its offset was not committed before the stop
    second.wait_for_log("signal dropped (stale): AAPL seq 9", timeout=10)


def faust_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streams.app", *args],
        cwd=ROOT,
        env={**os.environ, "TORGHUT_LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def row(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if f" {name} " in line)


def test_faust_lists_agents_and_tables_with_help() -> None:
    agents = row(faust_cli("agents"), "signals")
    assert "TA signals -> strategy runtime" in agents
    tables = row(faust_cli("tables"), "signal-watermarks")
    assert "drops stale and duplicate TA signals" in tables
