"""B6, the peer comparison: one backlog of Avro TA signals through three implementations of the
signals stage, one after the other, on the same broker and the same topic (4 partitions).

- worker: the project's worker, exactly as B2 runs it (lanes gated; the signals agent alone).
- quix: a Quix Streams application (bench/peers/quix_app.py, in its own venv) doing the same work.
- aiokafka: a plain aiokafka consume/produce loop (bench/peers/aiokafka_loop.py) doing the same.

The work is the same code in all three: the decoder's hot path, the dedupe watermark, the
worker's `SignalPipeline` (strategy runtime, fan-out to K lanes) and `encode_decision`
(bench/peers/work.py). Each contender reads the backlog with its own consumer group and writes
its decisions to its own topic. Measured alike for all three: signals/s from the output records'
timestamps, stamped by the broker (LogAppendTime: Quix Streams would give each output record its
input's timestamp), from the first decision of the first signal to the last decision of the last
one, as B2; CPU seconds of the process from its first output record to its last (/proc); RSS
at the end.
The decisions of all three are compared, hashes verified (bench/peers/compare.py): the benchmark
fails when they differ.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from bench.b1_ceiling import T0
from bench.b2_pipeline import UNREACHABLE_BROKER, drain, span_seconds
from bench.context import Context
from bench.goals import B6_PER_CPU_AIOKAFKA, B6_PER_CPU_QUIX
from bench.peers import venv
from bench.peers.compare import canonical, compare
from bench.report import BenchResult, ratio
from bench.signals import SignalSource, backlog, universe
from bench.support import (
    BenchProcess,
    BenchWorker,
    Seen,
    accounts_json,
    ensure_topics,
    labels,
    log_append_time,
    peak_rss_mib,
    prepare_app_topics,
    produce_many,
    read_topic,
    rss_mib,
    worker_env,
)
from tests.support.stack import StackInfo

CONTENDERS = ("worker", "quix", "aiokafka")


def per_cpu(figures: Mapping[str, Mapping[str, Any]], a: str, b: str) -> float | None:
    """a's signals per CPU second over b's (= b's CPU per signal over a's)."""
    return ratio(figures[b].get("cpu_us_per_signal"), figures[a].get("cpu_us_per_signal"))


async def measure(
    stack: StackInfo, pid: int, topic: str, expected: int, alive: Any
) -> tuple[float, float, float]:
    """(CPU seconds first→last output, RSS MiB, peak RSS MiB) once `topic` holds `expected`."""
    drained = asyncio.ensure_future(drain(stack, pid, topic, expected, timeout=900))
    while not drained.done():
        if not alive():
            drained.cancel()
            raise RuntimeError("the contender stopped before its last decision")
        await asyncio.sleep(0.5)
    cpu = await drained
    return cpu, rss_mib(pid), peak_rss_mib(pid)


def quix_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "from importlib.metadata import version; print(version('quixstreams'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or f"unknown ({out.stderr.strip()[-200:]})"


async def run(ctx: Context, result: BenchResult) -> None:
    profile, stack = ctx.profile, ctx.stack
    k = profile.accounts
    dsn = await ctx.databases.fresh()
    env = worker_env("b6", dsn, accounts_json(UNREACHABLE_BROKER, labels(k)))
    app_id = ctx.track(env["TORGHUT_APP_ID"])
    await prepare_app_topics(stack, env, control=False)
    sinks = {
        "worker": env["TORGHUT_DECISIONS_TOPIC"],
        "quix": f"{app_id}.peer-quix-decisions",
        "aiokafka": f"{app_id}.peer-aiokafka-decisions",
    }
    await ensure_topics(stack, [sinks["quix"], sinks["aiokafka"]])
    await log_append_time(stack, sinks.values())
    source = env["TORGHUT_SIGNALS_TOPIC"]
    signals = SignalSource(universe(profile.symbols), profile.intent_fraction)
    records = backlog(signals, profile.peer_signals, T0)
    first = next(records)
    first_signal = signals.last
    n = await produce_many(stack, source, [first, *records])
    last_signal = signals.last
    expected = signals.triggers * k
    quix_python = str(venv.ensure())
    figures: dict[str, dict[str, Any]] = {}
    outputs: dict[str, list[Seen]] = {}
    for name in CONTENDERS:
        topic = sinks[name]
        if name == "worker":
            worker = BenchWorker(stack, env, ctx.data_dir("b6"), "b6").start()
            try:
                worker.wait_for_log("[^Worker]: Ready", 180)
                cpu, rss, peak = await measure(stack, worker.pid, topic, expected, worker.alive)
            finally:
                worker.stop()
        else:
            group = f"{app_id}-peer-{name}"
            args = ["--source", source, "--sink", topic, "--group", group]
            if name == "quix":
                state = ctx.data_dir("b6-quix")
                cmd = [quix_python, "-m", "bench.peers.quix_app", *args, "--state-dir", str(state)]
            else:
                cmd = [sys.executable, "-m", "bench.peers.aiokafka_loop", *args]
            peer = BenchProcess(f"b6-{name}", cmd, env, ctx.workdir)
            try:
                cpu, rss, peak = await measure(stack, peer.pid, topic, expected, peer.alive)
            except RuntimeError as exc:
                raise RuntimeError(f"{name}: {exc}\n{peer.tail()}") from None
            finally:
                peer.stop()
        # Read to the end (not just `expected`): a duplicate must not go unseen.
        out = await read_topic(stack, topic, expect=None, timeout=300, idle=2.0)
        outputs[name] = out
        span = span_seconds(out, first_signal, last_signal)
        figures[name] = {
            "signals_per_s": (n - 1) / span if span else None,
            "cpu_us_per_signal": 1e6 * cpu / n,
            "rss_mib": rss,
            "peak_rss_mib": peak,
            "decisions": len(out),
            "span_seconds": span,
            "cpu_seconds": cpu,
        }
    comparison = compare(
        "worker", {name: [canonical(r.key, r.value) for r in out] for name, out in outputs.items()}
    )
    for name in CONTENDERS:
        f = figures[name]
        result.add(f"{name} signals/s", f["signals_per_s"], "sig/s")
        result.add(f"{name} cpu per signal", f["cpu_us_per_signal"], "µs")
        result.add(f"{name} rss", f["rss_mib"], "MiB")
    result.add(B6_PER_CPU_QUIX, per_cpu(figures, "worker", "quix"))
    result.add(B6_PER_CPU_AIOKAFKA, per_cpu(figures, "worker", "aiokafka"))
    result.add(
        "worker/quix signals/s",
        ratio(figures["worker"]["signals_per_s"], figures["quix"]["signals_per_s"]),
    )
    result.add("decisions equal", comparison.equal)
    result.details.update(
        {
            "signals": n,
            "intents": signals.triggers,
            "accounts": k,
            "decisions_expected": expected,
            "contenders": figures,
            "comparison": comparison.as_dict(),
            "quix_requirements": "bench/peers/requirements-quix.txt",
            "quixstreams": quix_version(quix_python),
            "topic": source,
        }
    )
    if not comparison.equal:
        raise RuntimeError(f"the contenders' decisions differ: {comparison.describe()}")
