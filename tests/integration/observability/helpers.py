"""Polling and app-CLI helpers of the observability integration tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from tests.support.stack import ROOT, StackInfo

T = TypeVar("T")


def until(probe: Callable[[], T | None], timeout: float, what: str, step: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


async def until_async(probe: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.5)


def cli(stack: StackInfo, env: Mapping[str, str], *args: str) -> str:
    full_env = {
        **os.environ,
        "KAFKA_BROKERS": stack.kafka_brokers,
        "DATABASE_URL": stack.database_url,
        "TORGHUT_LOG_FORMAT": "text",
        **env,
    }
    cmd = [sys.executable, "-m", "faust", "-A", "streams.app", *args]
    done = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def json_line(output: str) -> Any:
    return json.loads(next(line for line in output.splitlines() if line.startswith("{")))
