"""The real worker and CLI: the leader's poll source into Kafka, the cursor mirror in Postgres,
and `replay` into the signals agent for paper accounts only."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from schemas.codecs import decode_decision, decode_ta_signal
from streams.clickhouse.client import ClickHouse
from streams.domain.replay import replay_scope_from_headers
from streams.persistence import migrate
from tests.integration.clickhouse.helpers import insert, key_of, ta
from tests.integration.signals.helpers import (
    SHAPES,
    account,
    accounts_json,
    expected_hashes,
    metric,
    read_topic,
    signal,
)
from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

MS = timedelta(milliseconds=1)
STRATEGY_ENV = {"TRADING_STRATEGY_RUNTIME_MODE": "plugin_v3"}
REGISTRY = accounts_json(account("paper-a"), account("paper-b"))


def run_cli(stack: StackInfo, env: Mapping[str, str], tmp: Path, *args: str) -> Any:
    full = {
        **os.environ,
        "KAFKA_BROKERS": stack.kafka_brokers,
        "DATABASE_URL": stack.database_url,
        "TORGHUT_DATA_DIR": str(tmp),
        "TORGHUT_LOG_FORMAT": "text",
        **env,
    }
    cmd = [sys.executable, "-m", "faust", "-A", "streams.app", *args]
    return subprocess.run(cmd, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


def records_key(records: list[Any]) -> list[tuple[datetime, str, int]]:
    return [key_of(decode_ta_signal(r.value)) for r in records]


async def trade_cursors(dsn: str) -> dict[str, tuple[datetime, str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT account_label, cursor_ts, cursor_symbol, cursor_seq FROM trade_cursor "
            "WHERE source = 'clickhouse'"
        )
    finally:
        await conn.close()
    return {r["account_label"]: (r["cursor_ts"], r["cursor_symbol"], r["cursor_seq"]) for r in rows}


async def mirrored(dsn: str, cursor: tuple[datetime, str, int], timeout: float = 20) -> None:
    """Wait until both accounts' trade_cursor rows hold `cursor`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while (rows := await trade_cursors(dsn)) != {"paper-a": cursor, "paper-b": cursor}:
        assert asyncio.get_running_loop().time() < deadline, f"trade_cursor: {rows}"
        await asyncio.sleep(0.5)


async def test_leader_polls_into_the_signals_topic_and_resumes_after_restart(
    stack: StackInfo, pg_dsn: str, ch: ClickHouse, ch_dsn: str, tmp_path: Path
) -> None:
    await migrate.upgrade(pg_dsn, "head", default_account_label="paper-a")
    env = app_env(
        "chsrc",
        DATABASE_URL=pg_dsn,
        CLICKHOUSE_DSN=ch_dsn,
        TRADING_SIGNAL_SOURCE="clickhouse",
        TRADING_CLICKHOUSE_POLL_INTERVAL_SECONDS="0.3",
        TRADING_CLICKHOUSE_BATCH_SIZE="4",
        TRADING_CLICKHOUSE_LOOKBACK_SECONDS="600",
        TRADING_TA_FRESHNESS_ENABLED="true",
        TRADING_TA_FRESHNESS_SLO_SECONDS="3600",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=REGISTRY,
        TRADING_ACCOUNT_LABEL="paper-a",
        TRADING_RECONCILE_INTERVAL_SECONDS="3600",
    )
    await create_topics(stack.bootstrap, app_topics(env), partitions=4)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=60) + 3 * MS
    first = [ta(s, base + (i // 3) * MS, i) for i, s in enumerate(["AAPL", "BTC/USD", "MSFT"] * 3)]
    await insert(ch, first)
    await ch.close()  # hand the chdb path to the worker

    worker = Worker(stack, env, tmp_path / "w").start()
    try:
        worker.wait_ready(timeout=120)
        got = await read_topic(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], expect=9, settle=1)
        assert sorted(records_key(got)) == sorted(key_of(s) for s in first)
        assert all(r.key == decode_ta_signal(r.value).symbol.encode() for r in got)
        assert metric(worker, "torghut_clickhouse_rows_published_total") == 9
        assert metric(worker, "torghut_ta_stale", **{"class": "crypto"}) == 0
        cursor = max(key_of(s) for s in first)
        await mirrored(pg_dsn, cursor)  # per account, within the mirror's 5 s throttle
    finally:
        worker.stop()

    later = [
        ta("AAPL", cursor[0], 100),  # same millisecond as the cursor, a smaller symbol: late
        ta("TSLA", cursor[0] - timedelta(seconds=30), 1),  # older than the cursor, in lookback
        ta("ZZZZ", cursor[0], 1),
        ta("MSFT", cursor[0] + MS, 101),
        ta("NVDA", cursor[0] + timedelta(seconds=2), 1),
    ]
    again = ta("BTC/USD", first[4].event_ts, 4, ingest_delay=timedelta(seconds=9))
    await insert(ch, [*later, again])  # `again` re-inserts a key already published
    await ch.close()

    worker = Worker(stack, env, tmp_path / "w", name="restarted").start()
    try:
        worker.wait_ready(timeout=120)
        got = await read_topic(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], expect=14, settle=2)
        await mirrored(pg_dsn, max(key_of(s) for s in later))
    finally:
        worker.stop()
    keys = records_key(got)
    assert len(keys) == len(set(keys)) == 14  # nothing read twice across the restart
    assert sorted(keys) == sorted(key_of(s) for s in first + later)  # nothing skipped


async def test_replay_refuses_a_live_account_and_publishes_nothing(
    stack: StackInfo, tmp_path: Path
) -> None:
    live = {**account("live-1"), "mode": "live"}
    env = app_env(
        "chrefuse",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_LIVE_ENABLED="true",
        TRADING_ACCOUNTS_JSON=accounts_json(account("paper-a"), live),
        TRADING_ACCOUNT_LABEL="paper-a",
        CLICKHOUSE_DSN=f"chdb://{tmp_path / 'never-opened'}",
    )
    await create_topics(stack.bootstrap, app_topics(env), partitions=4)
    args = ("replay", "--from", "2026-03-02T14:30:00Z", "--to", "2026-03-02T15:00:00Z")
    refused = run_cli(stack, env, tmp_path, *args, "--accounts", "paper-a,live-1")
    assert refused.returncode == 2, refused.stderr
    assert "live-1: live account" in refused.stderr
    assert "secret-live-1" not in refused.stdout + refused.stderr
    assert not (tmp_path / "never-opened").exists()  # refused before touching ClickHouse
    assert (
        await read_topic(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], expect=1, timeout=3) == []
    )


async def test_replay_twice_gives_the_same_decisions_for_the_chosen_paper_account(
    stack: StackInfo, ch: ClickHouse, ch_dsn: str, tmp_path: Path
) -> None:
    env = app_env(
        "chreplay",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=REGISTRY,
        TRADING_ACCOUNT_LABEL="paper-a",
        TRADING_RECONCILE_INTERVAL_SECONDS="3600",
        CLICKHOUSE_DSN=ch_dsn,
        **STRATEGY_ENV,
    )
    await create_topics(stack.bootstrap, app_topics(env), partitions=4)
    history = [
        signal(s, seq, SHAPES[(seq + i) % len(SHAPES)])
        for seq in range(1, 5)
        for i, s in enumerate(("AAPL", "MSFT", "BTC/USD"))
    ]
    await insert(ch, history)
    await ch.close()
    expected = expected_hashes(history, ["paper-b"], STRATEGY_ENV)
    assert expected, "the fixture must produce decisions"

    worker = Worker(stack, env, tmp_path / "w").start()
    try:
        worker.wait_ready(timeout=120)
        start, end = history[0].event_ts, history[-1].event_ts + MS
        args = ("replay", "--from", start.isoformat(), "--to", end.isoformat())
        summaries = []
        for n in (1, 2):
            done = run_cli(stack, env, tmp_path, *args, "--accounts", "paper-b")
            assert done.returncode == 0, done.stderr
            summaries.append(json.loads(done.stdout.strip().splitlines()[-1]))
            decisions = await read_topic(
                stack.bootstrap, env["TORGHUT_DECISIONS_TOPIC"], expect=n * len(expected)
            )
    finally:
        worker.stop()

    assert [s["published"] for s in summaries] == [len(history)] * 2
    assert summaries[0]["digest"] == summaries[1]["digest"]
    assert summaries[0]["replay_id"] != summaries[1]["replay_id"]
    signals = await read_topic(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], expect=24)
    scopes = {replay_scope_from_headers(dict(r.headers)) for r in signals}
    assert {s.accounts for s in scopes if s} == {("paper-b",)} and None not in scopes

    decoded = [decode_decision(r.value) for r in decisions]
    assert len(decoded) == 2 * len(expected)
    assert {d.account_label for d in decoded} == {"paper-b"}  # never paper-a, never live
    by_run: dict[str, list[tuple[str, str]]] = {}
    for d in decoded:
        by_run.setdefault(d.telemetry["replay_id"], []).append((d.account_label, d.decision_hash))
    assert sorted(by_run) == sorted(s["replay_id"] for s in summaries)
    for run in by_run.values():
        assert sorted(run) == sorted(expected)
