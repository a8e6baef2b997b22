"""Feature flags from a Flipt-protocol server over real HTTP: per-lane entities, re-read while
running, fail-safe when the service answers errors or is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from streams.flags.core import (
    KILL_SWITCH,
    LIVE_ENABLED,
    MULTI_ACCOUNT_ENABLED,
    TRADING_ENABLED,
    FlagSnapshot,
)
from streams.flags.service import FlagService, build_flag_service
from streams.settings import Settings
from tests.support.flipt import FakeFlipt

pytestmark = pytest.mark.integration

TOKEN = "flipt-token-do-not-leak"


@pytest.fixture
def flipt() -> Iterator[FakeFlipt]:
    with FakeFlipt(namespace="trading") as server:
        server.set_flag(TRADING_ENABLED, True)
        server.set_flag(KILL_SWITCH, False)
        server.set_flag(MULTI_ACCOUNT_ENABLED, True)
        yield server


def service(flipt: FakeFlipt, refresh: float = 60.0) -> FlagService:
    settings = Settings(  # type: ignore[call-arg]
        TRADING_FLAGS_BACKEND="flipt",
        FLIPT_URL=flipt.url,
        FLIPT_NAMESPACE="trading",
        FLIPT_TOKEN=TOKEN,
        TRADING_FLAGS_REFRESH_SECONDS=str(refresh),
    )
    return build_flag_service(settings, ["ff-a", "ff-b"])


async def wait_for(svc: FlagService, predicate: object, timeout: float = 10.0) -> FlagSnapshot:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if predicate(svc.snapshot):  # type: ignore[operator]
            return svc.snapshot
        await asyncio.sleep(0.05)
    raise AssertionError(f"flags never matched: {svc.snapshot.as_dict()}")


async def test_lane_entities_are_evaluated_separately(flipt: FakeFlipt) -> None:
    flipt.set_flag(TRADING_ENABLED, False, entity="torghut:ff-b")
    flipt.set_flag(KILL_SWITCH, True, entity="torghut:ff-a")
    svc = service(flipt)
    try:
        snapshot = await svc.refresh()
    finally:
        await svc.close()
    assert snapshot.available and snapshot.backend == "flipt"
    assert snapshot.lane_enabled("ff-a") and not snapshot.lane_enabled("ff-b")
    assert snapshot.is_on(KILL_SWITCH, "ff-a") and not snapshot.is_on(KILL_SWITCH, "ff-b")
    # a flag Flipt does not define takes the settings default (live trading off)
    assert not snapshot.is_on(LIVE_ENABLED, "ff-a")
    lane_request = next(r for r in flipt.requests if r["entityId"] == "torghut:ff-a")
    assert lane_request["namespaceKey"] == "trading"
    assert lane_request["context"] == {"account_label": "ff-a"}
    assert {r["entityId"] for r in flipt.requests} == {"torghut", "torghut:ff-a", "torghut:ff-b"}
    assert set(flipt.authorization) == {f"Bearer {TOKEN}"}


async def test_flags_are_reread_while_running_and_fail_safe_when_flipt_fails(
    flipt: FakeFlipt,
) -> None:
    svc = service(flipt, refresh=0.1)
    task = asyncio.create_task(svc.run_forever())
    try:
        await wait_for(svc, lambda s: s.lane_enabled("ff-b"))

        flipt.set_flag(TRADING_ENABLED, False, entity="torghut:ff-b")  # operator flips a lane
        snapshot = await wait_for(svc, lambda s: not s.lane_enabled("ff-b"))
        assert snapshot.available and snapshot.lane_enabled("ff-a")

        flipt.down = True  # 503s
        snapshot = await wait_for(svc, lambda s: not s.available)
        assert not snapshot.lane_enabled("ff-a")
        assert snapshot.is_on(KILL_SWITCH, "ff-a")  # fail safe: blocked
        assert "HTTP 503" in (snapshot.lane_error("ff-a") or "")
        gauge = REGISTRY.get_sample_value("torghut_flags_available", {"entity": "torghut:ff-a"})
        assert gauge == 0

        flipt.down = False
        flipt.stop()  # connection refused
        snapshot = await wait_for(svc, lambda s: "unreachable" in (s.error or ""))
        assert TOKEN not in (snapshot.error or "")

        flipt.start()
        snapshot = await wait_for(svc, lambda s: s.available)
        assert snapshot.lane_enabled("ff-a") and not snapshot.lane_enabled("ff-b")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
