"""Benchmark results: percentiles, rates, goals, the results JSON and the printed table (pure).

A run is one JSON document: the profile, the machine and versions, each benchmark's metrics and
details, and the goals with their verdicts. It is written as `bench/results/<UTC timestamp>.json`
and copied to `bench/results/latest.json`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default "linear" method); None for no values."""
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50/p95/p99/max/mean in milliseconds."""
    return {
        "count": len(values_ms),
        "p50_ms": percentile(values_ms, 50),
        "p95_ms": percentile(values_ms, 95),
        "p99_ms": percentile(values_ms, 99),
        "max_ms": max(values_ms) if values_ms else None,
        "mean_ms": sum(values_ms) / len(values_ms) if values_ms else None,
    }


def rate_per_second(timestamps_ms: Iterable[float]) -> float | None:
    """Records per second between the first and the last record: (n - 1) intervals over the span.

    None with fewer than two records or a zero span (the rate is then not measurable)."""
    stamps = list(timestamps_ms)
    if len(stamps) < 2:
        return None
    span = (max(stamps) - min(stamps)) / 1000.0
    return (len(stamps) - 1) / span if span > 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Metric:
    value: float | int | str | None
    unit: str = ""


@dataclass
class BenchResult:
    """One benchmark: its headline metrics (the table) and everything else (the JSON)."""

    key: str  # "B1"
    title: str
    metrics: dict[str, Metric] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def add(self, name: str, value: float | int | str | None, unit: str = "") -> None:
        self.metrics[name] = Metric(value, unit)

    def value(self, name: str) -> float | None:
        metric = self.metrics.get(name)
        if metric is None or not isinstance(metric.value, int | float):
            return None
        return float(metric.value)


Comparison = Literal[">=", "<="]


@dataclass(frozen=True)
class Goal:
    name: str
    target: str  # human text, e.g. "B2/B1 >= 0.5"
    comparison: Comparison
    threshold: float
    measured: float | None
    unit: str = ""

    @property
    def met(self) -> bool | None:
        """None when the figure could not be measured."""
        if self.measured is None:
            return None
        if self.comparison == ">=":
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "met": self.met}


def verdict(met: bool | None) -> str:
    return {True: "MET", False: "MISSED", None: "n/a"}[met]


def result_dict(result: BenchResult) -> dict[str, Any]:
    return {
        "title": result.title,
        "seconds": round(result.seconds, 2),
        "error": result.error,
        "metrics": {k: asdict(m) for k, m in result.metrics.items()},
        "details": result.details,
    }


def document(
    *,
    profile: str,
    parameters: Mapping[str, Any],
    machine: Mapping[str, Any],
    versions: Mapping[str, Any],
    results: Sequence[BenchResult],
    goals: Sequence[Goal],
    started_at: datetime,
    finished_at: datetime,
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "profile": profile,
        "started_at": started_at.isoformat(),
        "finished_at": finished_at.isoformat(),
        "parameters": dict(parameters),
        "machine": dict(machine),
        "versions": dict(versions),
        "benchmarks": {r.key: result_dict(r) for r in results},
        "goals": [g.as_dict() for g in goals],
    }


def result_filename(at: datetime) -> str:
    """`20261121T115531Z.json`: sortable, one per run, in UTC."""
    return at.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ") + ".json"


def write_results(doc: Mapping[str, Any], directory: Path, at: datetime) -> Path:
    """Write the run's file and `latest.json`; return the run's file."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(doc, indent=2, sort_keys=False, default=str) + "\n"
    path = directory / result_filename(at)
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value == 0 or abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_table(doc: Mapping[str, Any]) -> str:
    """The human summary: every headline metric, then the goals with their verdicts."""
    rows: list[list[str]] = []
    for key, bench in doc["benchmarks"].items():
        if bench["error"]:
            rows.append([key, "ERROR", bench["error"].splitlines()[0][:90], ""])
        for name, metric in bench["metrics"].items():
            rows.append([key, name, format_value(metric["value"]), metric["unit"]])
    machine = doc["machine"]
    lines = [
        f"torghut-streams benchmarks ({doc['profile']}) {doc['started_at']}  "
        f"cores={machine.get('cores')} memory={format_value(machine.get('memory_gib'))} GiB "
        f"load={machine.get('load_average_start')}->{machine.get('load_average_end')}",
        "",
        *_table(["bench", "metric", "value", "unit"], rows),
        "",
    ]
    goal_rows = [
        [
            g["name"],
            g["target"],
            format_value(g["measured"]) + (f" {g['unit']}" if g["unit"] else ""),
            verdict(g["met"]),
        ]
        for g in doc["goals"]
    ]
    lines += _table(["goal", "target", "measured", "verdict"], goal_rows)
    return "\n".join(lines)
