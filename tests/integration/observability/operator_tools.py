"""The real programs operators run, driven on loopback: Prometheus (with the project's deploy
config), ZooKeeper + Burrow (consumer-lag evaluation) and headless Chromium. Binaries come from
`stack/tools.py ensure NAME` (Debian packages, installed when missing); every process runs on a free
127.0.0.1 port in its own session and is stopped by its own PID.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.support.stack import ROOT, free_port

DEPLOY = ROOT / "deploy"
ARTIFACTS = ROOT / ".cache" / "artifacts"  # ignored; kept after the run (screenshots)


@functools.cache
def ensure_tool(name: str) -> str:
    """The tool's binary (zookeeper: the jar folder), installed by stack/tools.py when missing."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "stack" / "tools.py"), "ensure", name],
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, f"stack/tools.py ensure {name} failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip().splitlines()[-1]


class Process:
    """A server process in its own session, output to a log file, stopped by its PID."""

    def __init__(self, name: str, cmd: list[str], log: Path, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                env={**os.environ},
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def wait_http(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: {url} not answering after {timeout}s:\n{self.tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)


# ------------------------------------------------------------------------------------ Prometheus


def prometheus_config(worker_targets: list[str], interval: str = "1s") -> dict[str, Any]:
    """deploy/prometheus.yml with the test's workers as static targets and short intervals.

    Everything else (job name, metrics path, rule files) is the deployed configuration's own.
    """
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(DEPLOY / f) for f in config["rule_files"]]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["torghut-streams"]
    for key in [k for k in job if k.endswith("_sd_configs") or k == "static_configs"]:
        del job[key]
    job["static_configs"] = [{"targets": worker_targets}]
    return config


class Prometheus(Process):
    def __init__(self, folder: Path, config: Mapping[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config_file = folder / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(dict(config)))
        cmd = [
            ensure_tool("prometheus"),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ]
        super().__init__("prometheus", cmd, folder / "prometheus.log", cwd=folder)
        self.wait_http(f"{self.url}/-/ready")

    def api(self, path: str, **params: str) -> Any:
        response = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant vector result of `expr` (an empty list: no data)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return list(data["result"])

    def has_data(self, expr: str) -> bool:
        """At least one sample with a finite value."""
        return any(math.isfinite(float(r["value"][1])) for r in self.query(expr))


# -------------------------------------------------------------------------------------- Chromium


def chromium(url: str, profile: Path, *args: str, timeout: float = 90.0) -> bytes:
    """Headless Chromium on `url` with `args` (e.g. --dump-dom); its stdout."""
    cmd = [
        ensure_tool("chromium"),
        "--headless",
        "--no-sandbox",  # root in CI
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    done = subprocess.run(
        cmd, capture_output=True, timeout=timeout, env={**os.environ, "HOME": str(profile)}
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    return done.stdout


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, from its IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


# ---------------------------------------------------------------------------- ZooKeeper + Burrow


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def to_toml(config: Mapping[str, Any]) -> str:
    """TOML of Burrow's two-level configuration ({section: {name: {key: value}}} or
    {section: {key: value}})."""
    lines: list[str] = []

    def table(name: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        if scalars:
            lines.append(f"[{name}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in scalars.items())
            lines.append("")
        for key, sub in body.items():
            if isinstance(sub, Mapping):
                table(f"{name}.{key}", sub)

    for section, body in config.items():
        table(section, body)
    return "\n".join(lines)


class ZooKeeper(Process):
    """Standalone ZooKeeper from the Kafka jars on a free loopback port (Burrow's coordination)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = folder / "zoo.cfg"
        config.write_text(
            f"clientPort={self.port}\nclientPortAddress=127.0.0.1\ndataDir={folder / 'data'}\n"
            "tickTime=500\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\n"
        )
        log4j = folder / "log4j.properties"
        log4j.write_text(
            "log4j.rootLogger=INFO, file\nlog4j.appender.file=org.apache.log4j.FileAppender\n"
            f"log4j.appender.file.File={folder / 'server.log'}\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
        )
        libs = ensure_tool("zookeeper")
        cmd = [
            "java", "-Xmx96m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j.configuration=file:{log4j}", "-cp", f"{libs}/*",
            "org.apache.zookeeper.server.ZooKeeperServerMain", str(config),
        ]  # fmt: skip
        super().__init__("zookeeper", cmd, folder / "zookeeper.log", cwd=folder)
        deadline = time.monotonic() + 60
        # Serving (not only listening): `srvr` names the mode once the database is loaded.
        while b"Mode: standalone" not in self._srvr():
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"zookeeper did not start:\n{self.tail()}")
            time.sleep(0.2)

    def _srvr(self) -> bytes:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as conn:
                conn.sendall(b"srvr")
                return conn.recv(4096)
        except OSError:
            return b""


def burrow_config(
    *, bootstrap: str, zookeeper_port: int, group: str, http_port: int, folder: Path
) -> dict[str, Any]:
    """deploy/burrow/burrow.toml for the local stack: hosts, ports and the group replaced, and
    windows short enough for a test (5 commits, log end sampled every second)."""
    config = tomllib.loads((DEPLOY / "burrow" / "burrow.toml").read_text())
    servers = bootstrap.split(",")
    config["general"]["pidfile"] = str(folder / "burrow.pid")
    config["zookeeper"]["servers"] = [f"127.0.0.1:{zookeeper_port}"]
    config["zookeeper"]["root-path"] = f"/burrow-{group}"
    (cluster_name,) = config["cluster"]
    (consumer_name,) = config["consumer"]
    config["cluster"][cluster_name].update(
        servers=servers, **{"offset-refresh": 1, "topic-refresh": 2}
    )
    config["consumer"][consumer_name].update(
        servers=servers, **{"group-whitelist": f"^{re.escape(group)}$"}
    )
    config["httpserver"]["default"]["address"] = f"127.0.0.1:{http_port}"
    config["storage"]["default"]["intervals"] = 5
    config["evaluator"]["default"]["expire-cache"] = 1
    return config


class Burrow(Process):
    """Burrow (Debian's) with a rendered configuration; `status`/`lag` of one consumer group."""

    def __init__(self, folder: Path, config: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "burrow.toml").write_text(to_toml(config))
        self.cluster = next(iter(config["consumer"].values()))["cluster"]
        self.url = "http://" + config["httpserver"]["default"]["address"]
        cmd = [ensure_tool("burrow"), "--config-dir", str(folder)]
        super().__init__("burrow", cmd, folder / "burrow.log", cwd=folder)
        self.wait_http(f"{self.url}/burrow/admin")

    def _get(self, path: str) -> Any:
        response = requests.get(f"{self.url}/v3/kafka/{self.cluster}{path}", timeout=5)
        return response.status_code, response.json()

    def groups(self) -> list[str]:
        code, body = self._get("/consumer")
        return list(body.get("consumers") or []) if code == 200 else []

    def lag(self, group: str) -> dict[str, Any] | None:
        """The group's evaluation with every partition (`/lag`), or None while Burrow has none."""
        code, body = self._get(f"/consumer/{group}/lag")
        return dict(body["status"]) if code == 200 and not body.get("error") else None
