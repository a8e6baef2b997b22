"""The operator page of a running worker in headless Chromium (Debian's, installed when missing):
the browser renders every lane with its state, kill switch and error, and the worker's readiness,
with no secret; a screenshot is kept in .cache/artifacts/operator-page.png."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.integration.observability.helpers import until
from tests.integration.observability.operator_tools import ARTIFACTS, chromium, png_size
from tests.integration.observability.trading import LANES, SECRETS, TradingWorker

pytestmark = pytest.mark.integration

WIDTH, HEIGHT = 1400, 900


class LaneCells(HTMLParser):
    """Text of each lane row's cells, keyed by the row's data-account."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[str]] = {}
        self._row: str | None = None
        self.ready = ""
        self._in_ready = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and found.get("data-account"):
            self._row = str(found["data-account"])
            self.rows[self._row] = []
        elif tag in ("td", "th") and self._row is not None:
            self.rows[self._row].append("")
        if found.get("id") == "ready":
            self._in_ready = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        if tag == "span" and self._in_ready and self.ready:
            self._in_ready = False

    def handle_data(self, data: str) -> None:
        if self._row is not None and self.rows[self._row]:
            self.rows[self._row][-1] += data
        if self._in_ready:
            self.ready += data.strip()


def test_operator_page_renders_every_lane_in_a_browser(
    ops_worker: TradingWorker, tmp_path: Path
) -> None:
    url = ops_worker.worker.url + "/trading/"
    response = ops_worker.worker.get("/trading/")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")

    def rendered() -> tuple[str, LaneCells] | None:
        """The DOM once the monitor has read alpha's lag (none during a rebalance)."""
        dom = chromium(url, tmp_path / "profile", "--dump-dom").decode()
        page = LaneCells()
        page.feed(dom)
        alpha = page.rows.get("alpha") or []
        return (dom, page) if len(alpha) > 7 and alpha[7].endswith("records") else None

    dom, page = until(rendered, 40, "the page to show alpha's lag", step=1.0)
    assert sorted(page.rows) == sorted(LANES), dom[:2000]
    assert page.ready == "yes"
    alpha, beta, gamma = (" | ".join(page.rows[lane]) for lane in ("alpha", "beta", "gamma"))
    # alpha trades: healthy, an order, no kill switch; lag is shown in seconds.
    assert "healthy" in alpha and "unhealthy" not in alpha and "off" in alpha
    assert re.fullmatch(r"\d+\.\d s\d+ records", page.rows["alpha"][7]), page.rows["alpha"]
    # beta: kill switch engaged by its flag, its decision rejected for it.
    assert "ENGAGED" in beta and "kill_switch_enabled" in beta
    # gamma: unhealthy with the auth error, never its keys.
    assert "unhealthy" in gamma and "broker_error_auth" in gamma
    assert not any(secret in dom for secret in SECRETS)
    assert '<meta http-equiv="refresh"' in dom

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "operator-page.png"
    shot.unlink(missing_ok=True)
    chromium(url, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}")
    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    assert len(data) > 20_000, "a blank page compresses to a few kB"
