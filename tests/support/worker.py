"""Run the real app as a `faust -A streams.app worker` subprocess, stopped by its own PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from tests.support.stack import ROOT, StackInfo, free_port


class Worker:
    """One worker process with its own data dir and web port; output captured for assertions."""

    def __init__(
        self, stack: StackInfo, env: Mapping[str, str], data_dir: Path, name: str = "worker"
    ) -> None:
        self.name = name
        self.data_dir = data_dir
        self.web_port = free_port()
        self.env = {
            **os.environ,
            "KAFKA_BROKERS": stack.kafka_brokers,
            "DATABASE_URL": stack.database_url,
            "TORGHUT_DATA_DIR": str(data_dir),
            "TORGHUT_WEB_PORT": str(self.web_port),
            "TORGHUT_BROKER_SESSION_TIMEOUT_SECONDS": "6",
            "TORGHUT_LOG_FORMAT": "text",
            "PYTHONUNBUFFERED": "1",
            # The local stack has one broker (stack/stack.py writes the same into its env file).
            "TORGHUT_TOPIC_REPLICATION_FACTOR": os.environ.get(
                "TORGHUT_TOPIC_REPLICATION_FACTOR", "1"
            ),
            **env,
        }
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> Worker:
        cmd = [sys.executable, "-m", "faust", "-A", "streams.app", "worker", "-l", "info"]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(self, needle: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no {needle!r} within {timeout}s:\n{self.tail()}")

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Ready = `/readyz` answers 200 (recovery done, Kafka and Postgres answer). Without the
        web server (or the view), faust's own `[^Worker]: Ready` log line."""
        deadline = time.monotonic() + timeout
        web = self.env.get("TORGHUT_WEB_ENABLED", "true").lower() not in ("0", "false", "no")
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            logged = any("[^Worker]: Ready" in line for line in self.lines)
            if web:
                try:
                    status = self.get("/readyz", timeout=2.0).status_code
                except requests.RequestException:
                    status = None
                if status == 200 or (status == 404 and logged):
                    return
            elif logged:
                return
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: not ready within {timeout}s:\n{self.tail()}")

    def get(self, path: str, timeout: float = 5.0) -> requests.Response:
        return requests.get(self.url + path, timeout=timeout)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """Hard crash: SIGKILL, no shutdown hooks, no final commit."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])
