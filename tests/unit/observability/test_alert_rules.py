"""The alert rules, checked and unit-tested by Prometheus' own `promtool` (Debian `prometheus`,
installed by stack/tools.py when missing): every alert has a test in which it fires."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "torghut-alerts.yml"
TESTS = sorted((DEPLOY / "alerts-tests").glob("*.yml"))


@pytest.fixture(scope="module")
def promtool() -> str:
    subprocess.run(
        [sys.executable, str(ROOT / "stack" / "tools.py"), "ensure", "prometheus"],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=900,
    )
    found = subprocess.run(
        [sys.executable, str(ROOT / "stack" / "tools.py"), "which", "promtool"],
        check=True,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip()


def alert_names() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule]


def firing_tests() -> dict[str, list[str]]:
    """Alert name → the test files with a case that expects it to fire."""
    found: dict[str, list[str]] = {}
    for path in TESTS:
        spec = yaml.safe_load(path.read_text())
        for case in spec["tests"]:
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    found.setdefault(check["alertname"], []).append(path.name)
    return found


def test_promtool_checks_the_rules(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in done.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    assert TESTS
    done = subprocess.run(
        [promtool, "test", "rules", *map(str, TESTS)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TESTS), done.stdout


def test_every_alert_has_a_test_in_which_it_fires() -> None:
    names = alert_names()
    assert len(names) == len(set(names)), "duplicate alert names"
    covered = firing_tests()
    assert not set(names) - covered.keys(), (
        f"alerts without a firing test: {set(names) - covered.keys()}"
    )
    assert not covered.keys() - set(names), (
        f"tests of unknown alerts: {covered.keys() - set(names)}"
    )
    for path in TESTS:
        assert yaml.safe_load(path.read_text())["rule_files"] == ["../torghut-alerts.yml"], path


def test_promtool_fails_a_wrong_expectation(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: a case expecting an alert that does not fire is reported."""
    (tmp_path / "torghut-alerts.yml").write_text(RULES.read_text())
    (tmp_path / "tests").mkdir()
    wrong = tmp_path / "tests" / "wrong.yml"
    wrong.write_text(
        yaml.safe_dump(
            {
                "rule_files": ["../torghut-alerts.yml"],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": [
                            {"series": 'torghut_lane_healthy{account="alpha"}', "values": "1x10"}
                        ],
                        "alert_rule_test": [
                            {
                                "eval_time": "5m",
                                "alertname": "TorghutLaneUnhealthy",
                                "exp_alerts": [{"exp_labels": {"account": "alpha"}}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    done = subprocess.run(
        [promtool, "test", "rules", str(wrong)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "TorghutLaneUnhealthy" in done.stdout + done.stderr
