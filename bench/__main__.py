"""Benchmarks of torghut-streams: `python -m bench --quick | --full [--only B1,B3]`.

Needs the local stack (stack/bench.sh starts and stops it: `make bench`, `make bench-quick`).
Writes bench/results/<UTC timestamp>.json and bench/results/latest.json and prints a table.
Exit status: 0 when every benchmark ran (goals missed included), 1 when one failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    b0_floor,
    b1_ceiling,
    b2_pipeline,
    b3_end_to_end,
    b4_scaling,
    b5_recovery,
    b6_peers,
)
from bench.context import PROFILES, Context, Profile
from bench.goals import goals
from bench.machine import load_average, machine_info, versions
from bench.report import BenchResult, document, render_table, write_results
from bench.support import Databases, require_stack
from tests.support.stack import ROOT

RESULTS_DIR = ROOT / "bench" / "results"

Runner = Callable[[Context, BenchResult], Awaitable[None]]
BENCHMARKS: dict[str, tuple[str, Runner]] = {
    "B1": ("raw Kafka passthrough (ceiling)", b1_ceiling.run),
    "B2": ("signals pipeline: decode, strategy, fan-out", b2_pipeline.run),
    "B6": ("signals stage beside its peers: Quix Streams, plain aiokafka", b6_peers.run),
    # B0 runs right before B3 (same run, same warm stack): B3's latency goal is a ratio to it.
    "B0": ("raw I/O floor of an order: decision → Kafka → POST → Kafka", b0_floor.run),
    "B3": ("end to end at a fixed signal rate", b3_end_to_end.run),
    "B4": ("account scaling", b4_scaling.run),
    "B5": ("recovery of a large ledger", b5_recovery.run),
}


async def run_one(ctx: Context, key: str) -> BenchResult:
    title, runner = BENCHMARKS[key]
    result = BenchResult(key, title)
    print(f"== {key}: {title}", flush=True)
    started = time.monotonic()
    try:
        await runner(ctx, result)
    except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
        result.error = f"{type(exc).__name__}: {exc}"
        result.details["traceback"] = traceback.format_exc()
        print(f"   {key} failed: {result.error}", flush=True)
    result.seconds = time.monotonic() - started
    print(f"   {key} done in {result.seconds:.0f}s", flush=True)
    return result


async def run(profile: Profile, selected: list[str]) -> int:
    stack = require_stack()
    started_at = datetime.now(UTC)
    machine = machine_info()
    with tempfile.TemporaryDirectory(prefix="torghut-bench-") as tmp:
        ctx = Context(stack, profile, Path(tmp), Databases(stack))
        try:
            results = [await run_one(ctx, key) for key in selected]
        finally:
            await ctx.cleanup()
    machine["load_average_end"] = load_average()
    doc = document(
        profile=profile.name,
        parameters=profile.as_dict() | {"benchmarks": selected},
        machine=machine,
        versions=await versions(stack),
        results=results,
        goals=goals(profile, results),
        started_at=started_at,
        finished_at=datetime.now(UTC),
    )
    path = write_results(doc, RESULTS_DIR, started_at)
    print()
    print(render_table(doc))
    print(f"\nresults: {path.relative_to(ROOT)} (and bench/results/latest.json)")
    return 1 if any(r.error for r in results) else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_const", dest="profile", const="quick")
    mode.add_argument("--full", action="store_const", dest="profile", const="full")
    parser.add_argument("--only", default="", help="comma-separated subset, e.g. B1,B2")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a profile field, e.g. --set ledger_keys=50000 --set rates=500",
    )
    parser.set_defaults(profile="quick")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (a stopped `make bench`) unwinds like Ctrl-C: workers and simulators are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    selected = [k.strip().upper() for k in args.only.split(",") if k.strip()] or list(BENCHMARKS)
    unknown = [k for k in selected if k not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    profile = with_overrides(PROFILES[args.profile], args.set)
    return asyncio.run(run(profile, selected))


def with_overrides(profile: Profile, assignments: list[str]) -> Profile:
    """`field=value` pairs over a profile; tuples are comma-separated."""
    changes: dict[str, object] = {}
    for assignment in assignments:
        name, _, text = assignment.partition("=")
        current = getattr(profile, name)
        if isinstance(current, tuple):
            changes[name] = tuple(type(current[0])(x) for x in text.split(","))
        else:
            changes[name] = type(current)(text)
    return dataclasses.replace(profile, **changes)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
