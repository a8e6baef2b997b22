"""`make run`: the local stack plus the main job, in the foreground.

Starts Kafka and Postgres (stack.py), applies migrations, starts the Alpaca simulator with two demo
paper accounts, the trade-updates forwarder and a synthetic TA signal feed, then runs the worker in
the foreground. Ctrl-C stops the worker, the helpers (by their own PIDs) and the stack.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
DEMO_DIR = ROOT / ".data" / "demo"
ACCOUNTS = [
    {"label": "paper-a", "key": "DEMOKEYA", "secret": "demo-secret-a", "cash": "100000"},
    {"label": "paper-b", "key": "DEMOKEYB", "secret": "demo-secret-b", "cash": "50000"},
]


def log(msg: str) -> None:
    print(f"[run] {msg}", flush=True)


def stack_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in (ROOT / ".cache" / "stack" / "env").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def start_simulator() -> tuple[subprocess.Popen[str], str]:
    DEMO_DIR.mkdir(parents=True, exist_ok=True)
    config = DEMO_DIR / "simulator-accounts.json"
    config.write_text(json.dumps({"accounts": ACCOUNTS}, indent=2))
    proc = subprocess.Popen(
        [PY, "-m", "simulator", "--host", "127.0.0.1", "--port", "0", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise SystemExit("the simulator did not start")
    url = str(json.loads(line)["url"])
    log(f"alpaca simulator on {url} (accounts: {', '.join(a['label'] for a in ACCOUNTS)})")
    return proc, url


def app_env(sim_url: str) -> dict[str, str]:
    registry = [
        {
            "label": a["label"],
            "mode": "paper",
            "api_key": a["key"],
            "secret_key": a["secret"],
            "base_url": sim_url,
            "enabled": True,
        }
        for a in ACCOUNTS
    ]
    return {
        **os.environ,
        **stack_env(),
        "TRADING_MULTI_ACCOUNT_ENABLED": "true",
        "TRADING_ACCOUNTS_JSON": json.dumps(registry),
        "TRADING_STRATEGY_RUNTIME_MODE": os.environ.get(
            "TRADING_STRATEGY_RUNTIME_MODE", "scheduler_v3"
        ),
        "TORGHUT_LOG_FORMAT": os.environ.get("TORGHUT_LOG_FORMAT", "text"),
        "TRADING_RECONCILE_INTERVAL_SECONDS": "10",
        "TRADING_SNAPSHOT_INTERVAL_SECONDS": "15",
    }


def faust(*args: str) -> list[str]:
    return [PY, "-m", "faust", "-A", "streams.app", *args]


def stop(proc: subprocess.Popen[str] | None, name: str) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log(f"{name} stopped (pid {proc.pid})")


def main() -> int:
    subprocess.run([PY, str(ROOT / "stack" / "stack.py"), "up"], check=True)
    helpers: list[tuple[subprocess.Popen[str], str]] = []
    worker: subprocess.Popen[str] | None = None
    try:
        sim, sim_url = start_simulator()
        helpers.append((sim, "simulator"))
        env = app_env(sim_url)
        subprocess.run(faust("db", "upgrade"), cwd=ROOT, env=env, check=True)
        subprocess.run(faust("topics"), cwd=ROOT, env=env, check=True)
        forwarder = subprocess.Popen(
            faust("forwarder"), cwd=ROOT, env=env, start_new_session=True, text=True
        )
        helpers.append((forwarder, "forwarder"))
        feed = subprocess.Popen(
            faust("demo-feed", "--simulator-url", sim_url),
            cwd=ROOT,
            env=env,
            start_new_session=True,
            text=True,
        )
        helpers.append((feed, "demo feed"))
        log("starting the worker; status at http://127.0.0.1:6066/trading/status — Ctrl-C stops")
        worker = subprocess.Popen(faust("worker", "-l", "info"), cwd=ROOT, env=env, text=True)
        while worker.poll() is None:
            for proc, name in helpers:
                if proc.poll() is not None:
                    log(f"{name} exited with {proc.returncode}; stopping")
                    return 1
            time.sleep(0.5)
        return worker.returncode or 0
    except KeyboardInterrupt:
        log("Ctrl-C: stopping")
        return 0
    finally:
        stop(worker, "worker")
        for proc, name in reversed(helpers):
            stop(proc, name)
        subprocess.run([PY, str(ROOT / "stack" / "stack.py"), "down"], check=False)


if __name__ == "__main__":
    sys.exit(main())
