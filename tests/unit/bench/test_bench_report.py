"""The benchmark report: percentile math, rates, goals, the results files and the table."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench.report import (
    BenchResult,
    Goal,
    document,
    latency_summary,
    percentile,
    rate_per_second,
    render_table,
    result_filename,
    write_results,
)

AT = datetime(2026, 11, 21, 12, 6, 39, 725000, tzinfo=UTC)


def test_percentile_interpolates_linearly_between_closest_ranks() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]
    assert percentile(values, 0) == 15.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile(values, 40)
    assert percentile(list(reversed(values)), 90) == pytest.approx(46.0)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 99) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_p99_of_a_hundred_values_sits_between_the_two_largest() -> None:
    values = [float(v) for v in range(1, 101)]
    summary = latency_summary(values)
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == 100.0
    assert summary["mean_ms"] == pytest.approx(50.5)


def test_rate_counts_intervals_between_first_and_last_record() -> None:
    assert rate_per_second([1000.0, 1500.0, 2000.0, 3000.0]) == pytest.approx(1.5)
    assert rate_per_second([5.0]) is None
    assert rate_per_second([5.0, 5.0]) is None  # no measurable span


def test_goal_verdicts() -> None:
    assert Goal("g", "t", ">=", 0.5, 0.7).met is True
    assert Goal("g", "t", ">=", 0.5, 0.2).met is False
    assert Goal("g", "t", "<=", 25.0, 25.0).met is True
    assert Goal("g", "t", "<=", 25.0, None).met is None


def sample_doc() -> dict[str, object]:
    b1 = BenchResult("B1", "ceiling")
    b1.add("messages/s", 11142.4, "msg/s")
    b2 = BenchResult("B2", "pipeline", error="RuntimeError: worker exited\ntraceback...")
    return document(
        profile="quick",
        parameters={"signals": 20000},
        machine={"cores": 2, "memory_gib": 23.5, "load_average_start": [1.0, 1.0, 1.0]},
        versions={"python": "3.11.7"},
        results=[b1, b2],
        goals=[Goal("G1 pipeline", "B2 >= 0.5 x B1", ">=", 0.5, None)],
        started_at=AT,
        finished_at=AT,
    )


def test_results_are_written_per_run_and_as_latest(tmp_path: Path) -> None:
    path = write_results(sample_doc(), tmp_path / "results", AT)
    assert path.name == "20261121T120639Z.json" == result_filename(AT)
    latest = json.loads((tmp_path / "results" / "latest.json").read_text())
    assert latest == json.loads(path.read_text())
    assert latest["machine"]["cores"] == 2
    assert latest["benchmarks"]["B1"]["metrics"]["messages/s"] == {
        "value": 11142.4,
        "unit": "msg/s",
    }
    assert latest["goals"][0]["met"] is None


def test_table_shows_metrics_errors_and_goal_verdicts() -> None:
    table = render_table(sample_doc())
    lines = table.splitlines()
    assert any(line.split()[:3] == ["B1", "messages/s", "11,142"] for line in lines)
    assert any("ERROR" in line and "worker exited" in line for line in lines)
    assert "traceback" not in table
    assert any(line.startswith("G1 pipeline") and line.endswith("n/a") for line in lines)
