"""A real Prometheus (Debian's, installed when missing) scrapes a running worker with
deploy/prometheus.yml: the target is up, the series the README names are there, the alert rules
load and evaluate, and every query of every Grafana panel returns data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.observability.helpers import until
from tests.integration.observability.operator_tools import DEPLOY, Prometheus, prometheus_config
from tests.integration.observability.trading import SECRETS, TradingWorker
from tests.support.stack import ROOT

pytestmark = pytest.mark.integration

RATE_INTERVAL = "1m"
# README-named families whose label sets only appear with traffic the shared worker does not get.
OTHER_TRAFFIC = {
    "torghut_decisions_emitted_total",
    "torghut_fill_replay_fills_total",
    "torghut_fill_replay_runs_total",
    "torghut_order_fill_refused_total",
    "torghut_position_drift",
    "torghut_order_feed_applied_total",
    "torghut_order_feed_duplicates_total",
    "torghut_order_feed_events_total",
    "torghut_order_feed_out_of_order_total",
    "torghut_order_feed_unlinked_total",
    "torghut_signals_dropped_total",
    "torghut_strategy_degraded",
    "torghut_strategy_errors_total",
    "torghut_strategy_evaluations_total",
    "torghut_ta_stale",
}


def readme_series() -> set[str]:
    """Every metric the README's "Main series" paragraph names (`{a,b}` alternatives expanded)."""
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("Main series:") : readme.index("Inspection:")]
    names: set[str] = set()
    for token in re.findall(r"`(torghut_[a-z_{},]+)", paragraph):
        token = re.sub(r"\{[a-z_,]*\}$", "", token)  # a trailing label list
        match = re.fullmatch(r"([a-z_]*)\{([a-z_,]+)\}([a-z_]*)", token)
        if match:
            head, alternatives, tail = match.groups()
            names.update(f"{head}{alt}{tail}" for alt in alternatives.split(","))
        else:
            names.add(token)
    return names


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, with the dashboard variables filled in."""
    dashboard = json.loads((DEPLOY / "grafana" / "torghut-streams.json").read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", RATE_INTERVAL)
            expr = expr.replace("$account", ".*")
            assert "$" not in expr, f"unknown dashboard variable in {expr}"
            out.append((panel["title"], expr))
    return out


def alert_names() -> set[str]:
    import yaml

    rules = yaml.safe_load((DEPLOY / "torghut-alerts.yml").read_text())
    return {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}


def test_prometheus_scrapes_the_worker_and_the_dashboard_has_data(
    ops_worker: TradingWorker, tmp_path: Path
) -> None:
    worker = ops_worker.worker
    prom = Prometheus(tmp_path / "prometheus", prometheus_config([f"127.0.0.1:{worker.web_port}"]))
    try:

        def target_up() -> bool:
            active = prom.api("targets")["activeTargets"]
            return any(
                t["labels"]["job"] == "torghut-streams" and t["health"] == "up" for t in active
            )

        until(target_up, 30, "the worker target to be up", step=0.5)
        assert prom.query('up{job="torghut-streams"}')[0]["value"][1] == "1"

        # Traffic while Prometheus watches, so the rates and latency quantiles have data.
        ops_worker.trade()

        # The series the README names: every family exported and scraped (Prometheus keeps its
        # metadata), and with samples unless its labels only appear with traffic this worker
        # does not get (trade updates, strategy signals, TA freshness).
        names = readme_series()
        assert len(names) > 20, names
        families = set(prom.api("metadata"))
        unknown = sorted(n for n in names if n not in families and n[:-6] not in families)
        assert not unknown, f"README names series the worker does not export: {unknown}"
        scraped = set(prom.api("label/__name__/values"))
        sampled = {n for n in names if {n, f"{n}_bucket", f"{n}_total"} & scraped}
        assert names - sampled <= OTHER_TRAFFIC, sorted(names - sampled - OTHER_TRAFFIC)

        # The alert rules are the deployed ones, loaded and evaluated without error.
        def rules_evaluated() -> dict[str, str] | None:
            groups = prom.api("rules")["groups"]
            rules = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            return rules if rules and all(h != "unknown" for h in rules.values()) else None

        rules = until(rules_evaluated, 30, "the alert rules to be evaluated")
        assert set(rules) == alert_names()
        assert set(rules.values()) == {"ok"}, rules

        # On this worker's real data: beta's kill switch and gamma's failure are pending (their
        # `for` has not elapsed), the dead letter fires at once; alpha raises nothing.
        def alerts() -> dict[str, set[tuple[str, str]]] | None:
            found: dict[str, set[tuple[str, str]]] = {}
            for alert in prom.api("alerts")["alerts"]:
                name = alert["labels"]["alertname"]
                found.setdefault(name, set()).add(
                    (alert["labels"].get("account", ""), alert["state"])
                )
            return found if "TorghutDeadLetters" in found and len(found) >= 3 else None

        active = until(alerts, 30, "the alerts of beta, gamma and the dead letter")
        assert ("beta", "pending") in active["TorghutKillSwitchEngaged"], active
        assert ("gamma", "pending") in active["TorghutLaneUnhealthy"], active
        assert {state for _, state in active["TorghutDeadLetters"]} == {"firing"}, active
        assert not any(account == "alpha" for pairs in active.values() for account, _ in pairs)

        # Every query of every dashboard panel returns (finite) data.
        queries = dashboard_queries()
        assert len(queries) >= 15

        def empty_queries() -> list[tuple[str, str]] | None:
            empty = [(title, expr) for title, expr in queries if not prom.has_data(expr)]
            return empty or None

        try:
            until(lambda: empty_queries() is None, 60, "every dashboard query to return data")
        except AssertionError as exc:
            raise AssertionError(f"panels without data: {empty_queries()}") from exc

        # Per-account panels see each lane: alpha's orders, beta's kill switch, gamma's errors.
        killed = prom.query("max by (account) (torghut_kill_switch_engaged)")
        assert {r["metric"]["account"]: r["value"][1] for r in killed} == {
            "alpha": "0",
            "beta": "1",
            "gamma": "0",
        }
        orders = prom.query("sum by (account) (torghut_lane_orders_submitted_total)")
        assert {r["metric"]["account"] for r in orders if float(r["value"][1]) > 0} == {"alpha"}
        errors = prom.query("sum by (account, class) (torghut_broker_errors_total)")
        assert any(r["metric"] == {"account": "gamma", "class": "auth"} for r in errors), errors

        # Nothing Prometheus stored carries a secret.
        labels = json.dumps(prom.api("series", **{"match[]": '{job="torghut-streams"}'}))
        assert not any(secret in labels for secret in SECRETS)
    finally:
        prom.stop()
