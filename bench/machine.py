"""The machine and the versions a run measured, recorded in every results file."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg

from tests.support.stack import ROOT, StackInfo

PACKAGES = (
    "faust-streaming",
    "aiokafka",
    "fastavro",
    "pydantic",
    "alpaca-py",
    "asyncpg",
    "rocksdict",
    "prometheus-client",
)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _meminfo_gib() -> float | None:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _cpu_model() -> str | None:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def machine_info() -> dict[str, Any]:
    """Cores, memory and load: the machine is shared, so the load is part of the result."""
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_gib": _meminfo_gib(),
        "kernel": platform.release(),
        "load_average_start": load_average(),
    }


def _kafka_version() -> str | None:
    libs = ROOT / ".cache" / "kafka" / (os.environ.get("TORGHUT_KAFKA_VERSION") or "3.9.1") / "libs"
    for jar in sorted(libs.glob("kafka-clients-*.jar")) if libs.exists() else []:
        found = re.search(r"kafka-clients-(.+)\.jar$", jar.name)
        if found:
            return found.group(1)
    return None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain"))}


async def _postgres_version(stack: StackInfo) -> str | None:
    try:
        conn = await asyncpg.connect(stack.database("postgres"))
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def versions(stack: StackInfo) -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    return {
        "python": platform.python_version(),
        "packages": packages,
        "kafka": _kafka_version(),
        "postgres": await _postgres_version(stack),
        "git": _git(),
    }
