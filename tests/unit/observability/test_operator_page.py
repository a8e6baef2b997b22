"""The operator page renderer: fed the real status board's snapshot, it shows every lane's state,
kill switch, last events, error and lag plus readiness; it escapes everything, shows no secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest

from streams.domain import secrets
from streams.observability.status import StatusBoard
from streams.web.operator_page import render_operator_page

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
SECRET = "SK-very-secret-value-123"


@pytest.fixture(autouse=True)
def registered_secret() -> Iterator[None]:
    secrets.register(SECRET)
    yield
    secrets.forget_all()


def status_body() -> dict[str, Any]:
    board = StatusBoard(clock=lambda: T0, error_grace_seconds=30)
    alpha, beta, gamma = board.lane("alpha"), board.lane("beta"), board.lane("gamma")
    for lane in (alpha, beta, gamma):
        lane.configure(mode="paper", enabled=True)
        lane.set_placement(owned=True, agent_running=True)
    alpha.record_decision("a" * 64)
    alpha.record_submission("a" * 64)
    alpha.set_lag([{"topic": "d", "partition": 1, "lag": 3, "lag_seconds": 2.5}])
    beta.set_kill_switch(True, "control (account): incident 42")
    beta.record_decision("b" * 64)
    beta.record_rejection("b" * 64, ["kill_switch_enabled"])
    gamma.record_error("auth", f"401 <script>alert(1)</script> secret_key={SECRET} api_key=AKX99")
    body = board.snapshot()
    body["worker"] = {"app_id": "torghut-streams", "group_id": "torghut-streams"}
    return body


class Rows(HTMLParser):
    """data-account of every lane row, and whether any script or form element exists."""

    def __init__(self) -> None:
        super().__init__()
        self.accounts: list[str] = []
        self.active: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "form", "button", "input", "iframe"):
            self.active.add(tag)
        if tag == "tr" and dict(attrs).get("data-account"):
            self.accounts.append(str(dict(attrs)["data-account"]))


def test_page_shows_every_lane_with_its_state() -> None:
    page = render_operator_page(status_body(), {"ready": True, "checks": {}})
    rows = Rows()
    rows.feed(page)
    assert rows.accounts == ["alpha", "beta", "gamma"]
    assert not rows.active, "the page is read-only and runs no script"
    assert '<meta http-equiv="refresh" content="5">' in page
    assert 'id="ready"><span class="ok">yes</span>' in page
    # alpha: decision and order, lag in seconds; beta: kill switch and its rejection.
    assert page.count("aaaaaaaaaaaa") == 2
    assert "2.5 s" in page and "3 records" in page
    assert "ENGAGED" in page and "incident 42" in page and "kill_switch_enabled" in page
    # gamma: unhealthy, with its error class.
    assert "unhealthy: gamma" in page and "broker_error_auth" in page


def test_page_escapes_and_never_shows_a_secret() -> None:
    page = render_operator_page(status_body(), {"ready": True, "checks": {}})
    assert SECRET not in page and "AKX99" not in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_not_ready_names_the_failing_checks() -> None:
    readiness = {
        "ready": False,
        "checks": {
            "kafka": {"ok": True, "detail": None},
            "recovery": {"ok": False, "detail": "restoring 1200 records"},
        },
    }
    page = render_operator_page(status_body(), readiness, refresh_seconds=2)
    assert 'id="ready"><span class="bad">no</span>' in page
    assert "recovery (restoring 1200 records)" in page and "kafka (" not in page
    assert '<meta http-equiv="refresh" content="2">' in page


def test_no_lanes_and_unknown_readiness() -> None:
    page = render_operator_page({"accounts": {}, "unhealthy": []}, None)
    assert "no lanes configured" in page
    assert re.search(r"Ready: <span class=\"muted\">unknown", page)
