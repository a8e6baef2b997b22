"""Readiness follows table recovery; `faust agents` / `faust tables` explain every entry."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

TOMBSTONES = 15_000  # a few seconds of recovery on a busy 2-core machine
MISSING_HELP = ("<N/A>", "Missing description")


@functools.cache
def faust_list(command: str) -> dict[str, str]:
    """`faust -A streams.app <agents|tables>` as {name: help} (wrapped help rows joined)."""
    env = {**os.environ, "COLUMNS": "400", "TORGHUT_LOG_FORMAT": "text"}
    args = [sys.executable, "-m", "faust", "-A", "streams.app", command]
    if command == "agents":
        args.append("--local")
    out = subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    rows: dict[str, str] = {}
    last = ""
    for line in out.splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, help_text = cells[0], cells[-1]
        if name == "name":
            continue
        if name:
            last = name
            rows[name] = help_text
        elif last:
            rows[last] = f"{rows[last]} {help_text}".strip()
    return rows


def test_faust_agents_and_tables_show_a_help_line_for_every_entry() -> None:
    agents, tables = faust_list("agents"), faust_list("tables")
    assert agents and tables
    missing = {
        name: text
        for name, text in {**agents, **tables}.items()
        if not text or text.startswith(MISSING_HELP)
    }
    assert not missing, f"agents/tables without a help line: {sorted(missing)}"


async def fill_changelog(bootstrap: str, topic: str, n: int) -> None:
    """`n` tombstones: recovery must read them all, and they leave the table empty. Keys are
    JSON strings so that they decode under a table's `json` as well as its `raw` serializer."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024, acks=1
    )
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=json.dumps(f"k{i}").encode(), value=None)
            for i in range(n)
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def remaining_from(detail: str) -> int:
    found = re.search(r"\((\d+) records remaining\)", detail)
    return int(found.group(1)) if found else -1


async def test_readiness_is_false_during_a_changelog_recovery(
    stack: StackInfo, workers: list[Worker], tmp_path: Path
) -> None:
    # faust's own per-event recovery: the bulk restore (streams/state) would finish these
    # records before a probe could see them; tests/integration/state covers its readiness.
    env = app_env("obs-ready", TORGHUT_TABLE_BULK_RESTORE="false")
    await create_topics(
        stack.bootstrap, app_topics(env), partitions=4, compact=[env["TORGHUT_CONTROL_TOPIC"]]
    )
    table = sorted(faust_list("tables"))[0]  # the listing does not depend on the app id
    changelog = f"{env['TORGHUT_APP_ID']}-{table}-changelog"
    await create_topics(stack.bootstrap, [changelog], partitions=4, compact=[changelog])
    await fill_changelog(stack.bootstrap, changelog, TOMBSTONES)

    worker = Worker(stack, env, tmp_path / "data").start()
    workers.append(worker)
    seen_recovering: list[tuple[int, float]] = []  # (remaining in /readyz, remaining gauge)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert worker.proc is not None and worker.proc.poll() is None, worker.tail()
        try:
            ready = worker.get("/readyz", timeout=2)
            scrape = worker.get("/metrics", timeout=2).text
        except requests.ConnectionError:
            time.sleep(0.05)  # the web server is not listening yet
            continue
        body = ready.json()
        if ready.status_code == 200:
            assert body["ready"] is True
            break
        assert ready.status_code == 503 and body["ready"] is False
        recovery = body["checks"]["recovery"]
        if not recovery["ok"] and remaining_from(recovery["detail"]) > 0:
            gauge = next(
                s.value
                for f in text_string_to_metric_families(scrape)
                if f.name == "torghut_table_recovery_remaining_records"
                for s in f.samples
                if s.labels["kind"] == "active"
            )
            seen_recovering.append((remaining_from(recovery["detail"]), gauge))
        time.sleep(0.05)
    else:
        raise AssertionError(f"never ready:\n{worker.tail()}")

    assert seen_recovering, "readiness was never observed false while records remained"
    assert any(gauge > 0 for _, gauge in seen_recovering)
    assert all(0 < left <= TOMBSTONES for left, _ in seen_recovering)
    after = worker.get("/metrics").text
    assert 'torghut_table_recovery_remaining_records{kind="active"} 0.0' in after
    assert worker.get("/healthz").status_code == 200
