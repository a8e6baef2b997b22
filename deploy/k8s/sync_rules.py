"""Write base/prometheusrule.yaml from deploy/torghut-alerts.yml (the one source of the alert
rules; `make docs` runs this and a test fails when the two drift).

    python deploy/k8s/sync_rules.py [--check]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE.parent / "torghut-alerts.yml"
RULE = HERE / "base" / "prometheusrule.yaml"


def render() -> str:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "torghut-streams", "labels": {"role": "alert-rules"}},
        "spec": {"groups": groups},
    }
    header = "# Generated from deploy/torghut-alerts.yml by deploy/k8s/sync_rules.py: edit that.\n"
    return header + yaml.safe_dump(rule, sort_keys=False, width=100)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        return 0 if RULE.exists() and RULE.read_text() == text else 1
    RULE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
