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
input's timestamp), from the contender's first decision to its last (`run_span_seconds`: not B2's
first-signal-to-last-signal span, which assumes the partitions are read interleaved); CPU
seconds of the process from its first output record to its last (/proc); RSS at the end.
The decisions of all three are compared, hashes verified (bench/peers/compare.py): the benchmark
fails when they differ.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from bench.b1_ceiling import T0
from bench.b2_pipeline import UNREACHABLE_BROKER, drain
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


def run_span_seconds(records: Sequence[Seen]) -> float | None:
    """From the first decision of the run to the last (broker timestamps); None with fewer than
    two distinct timestamps.

    Not B2's span from the first decision of the backlog's first signal to the last decision of
    its last signal: that one assumes the partitions are read interleaved, in backlog order, as
    faust and aiokafka's `getmany` do. Quix Streams reads a partition in long runs, so the
    backlog's first and last signals (on different partitions) can be handled 1 ms apart, or in
    the opposite order: 30,000,000 signals/s or a negative rate. Over the run's own first and
    last decision the span is the same for every contender; what it leaves out are the signals
    handled before the first trigger and after the last one (a few hundred of the backlog at
    0.5% triggering, less than the rate's run-to-run noise)."""
    if not records:
        return None
    stamps = [r.timestamp_ms for r in records]
    span = (max(stamps) - min(stamps)) / 1000.0
    return span if span > 0 else None


def signals_per_second(signals: int, span: float | None) -> float | None:
    """(signals - 1) over the span: the first and the last signal of the backlog trigger."""
    return (signals - 1) / span if span else None


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
    n = await produce_many(stack, source, list(records))
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
        span = run_span_seconds(out)
        figures[name] = {
            "signals_per_s": signals_per_second(n, span),
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
