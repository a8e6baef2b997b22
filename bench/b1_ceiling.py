"""B1, the ceiling: a raw aiokafka consume → produce passthrough of N Avro signals.

Same broker, same partition count and the same signals as B2. The rate is read on the consumer
side: the output records' timestamps (set by the passthrough's producer at send time), first to
last. A second reference, not the goal's ceiling: the same records through an empty faust agent
(bench/faust_passthrough.py), faust's own per-record cost.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import DEVNULL
from datetime import UTC, datetime

from bench.context import Context
from bench.report import BenchResult, rate_per_second, ratio
from bench.signals import SignalSource, backlog, universe
from bench.support import ensure_topics, produce_many, read_topic, topic_size
from tests.support.stack import ROOT, unique

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


async def run(ctx: Context, result: BenchResult) -> None:
    profile = ctx.profile
    prefix = ctx.track(unique("b1"))
    source, sink = f"{prefix}.signals", f"{prefix}.out"
    await ensure_topics(ctx.stack, [source, sink])
    signals = SignalSource(universe(profile.symbols), profile.intent_fraction)
    n = await produce_many(ctx.stack, source, backlog(signals, profile.signals, T0))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.passthrough",
        "--bootstrap",
        ctx.stack.bootstrap,
        "--source",
        source,
        "--sink",
        sink,
        "--group",
        prefix,
        "--count",
        str(n),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 600)
    if proc.returncode != 0:
        raise RuntimeError(f"passthrough failed ({proc.returncode}): {stderr.decode()[-2000:]}")
    stats = json.loads(stdout.decode().strip().splitlines()[-1])
    out = await read_topic(ctx.stack, sink, expect=n, timeout=120)
    rate = rate_per_second(r.timestamp_ms for r in out)
    result.add("messages/s", rate, "msg/s")
    result.add("messages", len(out))
    result.add("cpu per message", 1e6 * stats["cpu_seconds"] / max(1, n), "µs")
    result.details.update(
        {"produced": n, "forwarded": stats["forwarded"], "passthrough": stats, "topic": source}
    )
    if len(out) != n:
        raise RuntimeError(f"passthrough wrote {len(out)} of {n} records")
    ctx.shared["b1_rate"] = rate
    await faust_reference(ctx, result, source, n)


async def faust_reference(ctx: Context, result: BenchResult, source: str, n: int) -> None:
    """The same records through an empty faust agent: msg/s, and its share of B1."""
    app_id = ctx.track(unique("b1f"))
    sink = f"{app_id}.out"
    await ensure_topics(ctx.stack, [sink])
    env = {
        **os.environ,
        "BENCH_APP_ID": app_id,
        "BENCH_BROKER": ctx.stack.bootstrap,
        "BENCH_SOURCE": source,
        "BENCH_SINK": sink,
        "BENCH_DATADIR": str(ctx.data_dir("b1f")),
    }
    cmd = [sys.executable, "-m", "faust", "-A", "bench.faust_passthrough", "worker", "-l", "warn"]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=ROOT, env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    try:
        deadline = asyncio.get_running_loop().time() + 300
        while await topic_size(ctx.stack, sink) < n:
            if proc.returncode is not None or asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"faust passthrough stopped short (exit {proc.returncode})")
            await asyncio.sleep(0.5)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    out = await read_topic(ctx.stack, sink, expect=n, timeout=120)
    rate = rate_per_second(r.timestamp_ms for r in out)
    result.add("faust agent passthrough", rate, "msg/s")
    result.add("faust agent / raw", ratio(rate, ctx.shared.get("b1_rate")))
    ctx.shared["b1_faust_rate"] = rate
