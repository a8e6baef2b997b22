"""The control feed's lag and staleness in `/trading/status` (worker section) and `/metrics`."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import faust
from prometheus_client import REGISTRY

from streams.domain.kill_switch import KillSwitchBook
from streams.execution.control_feed import ControlFeed
from streams.observability.status import StatusBoard
from streams.observability.worker import WorkerObservability, control_feed_info
from streams.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def feed(clock: Clock) -> ControlFeed:
    return ControlFeed("localhost:9092", "torghut.control.v1", KillSwitchBook(), clock=clock)


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def observability(control: ControlFeed, stale_after: float) -> WorkerObservability:
    settings = Settings(TORGHUT_CONTROL_FEED_STALE_SECONDS=stale_after)  # type: ignore[call-arg]
    # Only what the no-I/O paths read of the app (they tolerate missing tables and consumer).
    app = SimpleNamespace(conf=SimpleNamespace(id="torghut-test"), rebalancing=False)
    return WorkerObservability(
        cast(faust.App, app),
        settings,
        StatusBoard(),
        lanes=[],
        account_topics=[],
        control=control,
    )


def test_before_catch_up_the_feed_is_neither_current_nor_stale() -> None:
    info = control_feed_info(feed(Clock()), 60.0)
    assert info == {
        "caught_up": False,
        "lag_records": 0,
        "stale_seconds": None,
        "stale_after_seconds": 60.0,
        "stale": False,
    }


def test_status_reports_lag_and_seconds_since_the_feed_advanced() -> None:
    clock = Clock()
    control = feed(clock)
    control._mark_caught_up()
    control.lag = 7
    clock.now += 12.5
    info = control_feed_info(control, 60.0)
    assert info["caught_up"] is True
    assert info["lag_records"] == 7
    assert info["stale_seconds"] == 12.5
    assert info["stale"] is False
    clock.now += 50.0
    assert control_feed_info(control, 60.0)["stale"] is True


def test_worker_info_and_gauges_follow_the_feed() -> None:
    clock = Clock()
    control = feed(clock)
    obs = observability(control, 30.0)
    obs.refresh_gauges()
    assert gauge("torghut_control_feed_caught_up") == 0
    assert gauge("torghut_control_feed_stale_seconds") == 0
    assert gauge("torghut_control_feed_stale_threshold_seconds") == 30.0

    control._mark_caught_up()
    control.lag = 3
    clock.now += 45.0
    obs.refresh_gauges()
    assert gauge("torghut_control_feed_caught_up") == 1
    assert gauge("torghut_control_feed_lag_records") == 3
    assert gauge("torghut_control_feed_stale_seconds") == 45.0
    section: dict[str, Any] = obs.worker_info()["control_feed"]
    assert section["lag_records"] == 3
    assert section["stale_seconds"] == 45.0
    assert section["stale"] is True

    control.advanced_at = clock.now  # the reader advanced again
    control.lag = 0
    obs.refresh_gauges()
    assert gauge("torghut_control_feed_stale_seconds") == 0
    assert gauge("torghut_control_feed_lag_records") == 0
    assert obs.worker_info()["control_feed"]["stale"] is False


async def test_the_monitor_tick_refreshes_the_feed_even_when_the_broker_is_unreachable() -> None:
    clock = Clock()
    control = feed(clock)
    control._mark_caught_up()
    clock.now += 99.0
    obs = observability(control, 30.0)

    async def unreachable() -> Any:
        raise ConnectionError("broker down")

    obs.reader = unreachable  # type: ignore[method-assign]
    await obs.refresh_guarded()
    assert gauge("torghut_control_feed_stale_seconds") == 99.0
