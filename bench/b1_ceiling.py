"""B1, the ceiling: a raw aiokafka consume → produce passthrough of N Avro signals.

Same broker, same partition count and the same signals as B2. The rate is read on the consumer
side: the output records' timestamps (set by the passthrough's producer at send time), first to
last.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime

from bench.context import Context
from bench.report import BenchResult, rate_per_second
from bench.signals import SignalSource, backlog, universe
from bench.support import ensure_topics, produce_many, read_topic
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
