"""`topics` creates the project's topics (changelogs included) with the configured replication;
`topics --check` names missing, wrongly partitioned, under-replicated and uncompacted topics."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, app_env

pytestmark = pytest.mark.integration


def faust(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faust", "-A", "streams.app", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_topics_create_and_check(stack: StackInfo) -> None:
    env = app_env(
        "topics",
        KAFKA_BROKERS=stack.kafka_brokers,
        TORGHUT_TOPIC_REPLICATION_FACTOR="1",
    )
    app_id = env["TORGHUT_APP_ID"]
    # Made by someone else, wrongly: 2 partitions (not co-partitioned), a control topic that
    # is not compacted.
    await create_topics(stack.bootstrap, [env["TORGHUT_DECISIONS_TOPIC"]], partitions=2)
    await create_topics(stack.bootstrap, [env["TORGHUT_CONTROL_TOPIC"]], partitions=4)

    before = faust(env, "topics", "--check")
    assert before.returncode == 1, before.stdout + before.stderr
    assert f"PROBLEM: {app_id}-lane-ledger-changelog: missing" in before.stdout

    created = faust(env, "topics")
    assert created.returncode == 0, created.stdout + created.stderr
    assert f"{app_id}-lane-ledger-changelog\tcreated" in created.stdout
    assert f"{env['TORGHUT_DECISIONS_TOPIC']}\texists" in created.stdout

    check = faust(env, "topics", "--check")
    assert check.returncode == 1
    problems = [line for line in check.stdout.splitlines() if line.startswith("PROBLEM")]
    assert problems == [
        f"PROBLEM: {env['TORGHUT_DECISIONS_TOPIC']}: 2 partitions, want 4 "
        "(co-partitioned with the tables and the decisions topic)",
        f"PROBLEM: {env['TORGHUT_CONTROL_TOPIC']}: cleanup.policy=delete, want compact",
    ]

    # Production wants 3 replicas: the one-broker stack's topics are all under-replicated.
    replicated = faust({**env, "TORGHUT_TOPIC_REPLICATION_FACTOR": "3"}, "topics", "--check")
    assert replicated.returncode == 1
    assert (
        f"PROBLEM: {app_id}-lane-ledger-changelog: under-replicated: replication factor 1, want 3"
        in replicated.stdout
    )
    assert f"PROBLEM: {app_id}-lane-ledger-changelog: min.insync.replicas=1, want 2" in (
        replicated.stdout
    )


async def test_topics_ok_after_create(stack: StackInfo) -> None:
    env = app_env("topics", KAFKA_BROKERS=stack.kafka_brokers, TORGHUT_TOPIC_REPLICATION_FACTOR="1")
    assert faust(env, "topics").returncode == 0
    check = faust(env, "topics", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    # 6 project topics, 2 internal ones, 5 table changelogs (cursors, ledger, slots, index,
    # watermarks).
    assert "ok: 13 topics" in check.stdout
