"""The local stack script: idempotent `up`, `status`, and a `down` that leaves nothing behind.

Runs a second, private stack (TORGHUT_STACK_DIR) so the suite's own stack is untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import ROOT

pytestmark = pytest.mark.integration


def run(stack_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TORGHUT_STACK_DIR": str(stack_dir)}
    return subprocess.run(
        [sys.executable, str(ROOT / "stack" / "stack.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def stack_dir() -> Iterator[Path]:
    # Under the project's cache, not /tmp/pytest-of-*: the postgres user must reach the cluster.
    path = ROOT / ".cache" / "test-stacks" / uuid.uuid4().hex[:8]
    path.mkdir(parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_up_twice_status_down_leaves_nothing(stack_dir: Path) -> None:
    try:
        first = run(stack_dir, "up")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "ready in" in first.stdout
        state = json.loads((stack_dir / "state.json").read_text())
        ports = [state["kafka_port"], state["controller_port"], state["pg_port"]]
        assert all(listening(p) for p in ports)
        kafka_pid = int((stack_dir / "kafka" / "kafka.pid").read_text())

        second = run(stack_dir, "up")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "kafka already running" in second.stdout
        assert "postgres already running" in second.stdout
        assert int((stack_dir / "kafka" / "kafka.pid").read_text()) == kafka_pid

        status = run(stack_dir, "status")
        assert status.returncode == 0
        assert f"kafka    up (pid {kafka_pid})" in status.stdout
        assert "postgres up" in status.stdout
    finally:
        down = run(stack_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not Path(f"/proc/{kafka_pid}").exists() or "kafka" not in Path(
        f"/proc/{kafka_pid}/cmdline"
    ).read_text(errors="replace")
    assert not any(listening(p) for p in ports)
    assert run(stack_dir, "status").returncode == 3


def test_stale_pid_file_is_handled(stack_dir: Path) -> None:
    (stack_dir / "kafka").mkdir(parents=True)
    # A PID that is certainly not our broker: this test process itself.
    (stack_dir / "kafka" / "kafka.pid").write_text(str(os.getpid()))
    status = run(stack_dir, "status")
    assert status.returncode == 3
    assert "removing stale PID file" in status.stdout
    assert not (stack_dir / "kafka" / "kafka.pid").exists()
