"""The recovery watchdog gives up (exit) on a recovery that outlasts its limit, only then."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest

from streams.observability.recovery_watchdog import (
    RECOVERY_STUCK,
    RecoveryState,
    RecoveryWatchdog,
)
from streams.observability.worker import recovery_state


class World:
    def __init__(self) -> None:
        self.now = 0.0
        self.state = RecoveryState(recovering=True, remaining=1234)
        self.exits: list[str] = []

    def watchdog(self, limit: float = 900.0) -> RecoveryWatchdog:
        return RecoveryWatchdog(
            lambda: self.state, limit, clock=lambda: self.now, give_up=self.exits.append
        )


def test_a_recovery_past_the_limit_exits_with_the_reason() -> None:
    world = World()
    dog = world.watchdog()
    dog.check()
    world.now = 900.0
    dog.check()
    assert world.exits == []  # at the limit, not past it
    world.now = 901.0
    dog.check()
    assert len(world.exits) == 1
    reason = world.exits[0]
    assert reason.startswith(f"{RECOVERY_STUCK}:")
    assert "901s" in reason and "1234 active changelog records" in reason


def test_a_finished_recovery_resets_the_clock() -> None:
    world = World()
    dog = world.watchdog()
    dog.check()
    world.now = 800.0
    world.state = RecoveryState(recovering=False, remaining=0)
    dog.check()
    assert dog.started_at is None
    world.now = 1000.0  # a new recovery (rebalance) starts here
    world.state = RecoveryState(recovering=True, remaining=10)
    dog.check()
    world.now = 1800.0
    dog.check()
    assert world.exits == []
    world.now = 1901.0
    dog.check()
    assert len(world.exits) == 1


def test_zero_disables_the_watchdog() -> None:
    world = World()
    dog = world.watchdog(limit=0)
    dog.check()
    world.now = 10**6
    dog.check()
    assert world.exits == [] and dog.started_at is None


async def test_run_forever_checks_until_it_gives_up_and_survives_a_failing_check() -> None:
    world = World()
    calls = 0

    def state() -> RecoveryState:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("tables not set up yet")
        return world.state

    gave_up = asyncio.Event()

    def give_up(reason: str) -> None:
        world.exits.append(reason)
        gave_up.set()

    loop = asyncio.get_running_loop()
    dog = RecoveryWatchdog(state, 0.05, clock=loop.time, give_up=give_up)
    task = asyncio.create_task(dog.run_forever(0.01))
    try:
        await asyncio.wait_for(gave_up.wait(), timeout=2.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert calls >= 3 and world.exits[0].startswith(RECOVERY_STUCK)


def fake_app(*, completed: bool, in_recovery: bool, remaining: int) -> faust.App:
    event = asyncio.Event()
    if completed:
        event.set()
    recovery: Any = SimpleNamespace(
        completed=event,
        in_recovery=in_recovery,
        active_remaining_total=lambda: remaining,
        standby_remaining_total=lambda: 0,
    )
    return cast(faust.App, SimpleNamespace(tables=SimpleNamespace(recovery=recovery)))


@pytest.mark.parametrize(
    ("completed", "in_recovery", "recovering"),
    [(False, False, True), (False, True, True), (True, True, True), (True, False, False)],
)
def test_recovery_state_reads_faust(completed: bool, in_recovery: bool, recovering: bool) -> None:
    state = recovery_state(fake_app(completed=completed, in_recovery=in_recovery, remaining=7))
    assert state == RecoveryState(recovering=recovering, remaining=7)
