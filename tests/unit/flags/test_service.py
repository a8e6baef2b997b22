from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from prometheus_client import REGISTRY

from streams.flags.core import GLOBAL_ENTITY, TRADING_ENABLED, EntityFlags, FlagSnapshot
from streams.flags.service import FlagService, flag_entities


class ScriptedBackend:
    """Answers from a script: a dict of values, or an exception to raise."""

    name = "scripted"

    def __init__(self) -> None:
        self.fail: Exception | None = None
        self.calls = 0
        self.closed = False

    async def evaluate(self, entities: Sequence[str]) -> dict[str, EntityFlags]:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return {e: EntityFlags(e, {TRADING_ENABLED: True}) for e in entities}

    async def close(self) -> None:
        self.closed = True


def gauge(entity: str) -> float | None:
    return REGISTRY.get_sample_value("torghut_flags_available", {"entity": entity})


def test_entities_are_global_then_sorted_lanes() -> None:
    assert flag_entities(["b", "a", "b"]) == ("torghut", "torghut:a", "torghut:b")


async def test_snapshot_is_unavailable_until_loaded() -> None:
    service = FlagService(ScriptedBackend(), flag_entities(["svc-a"]), 60)
    assert not service.snapshot.available
    assert (
        service.snapshot.error
        == "torghut: flags not loaded yet; torghut:svc-a: flags not loaded yet"
    )
    snapshot = await service.ensure_loaded()
    assert snapshot.lane_enabled("svc-a")
    assert gauge("torghut:svc-a") == 1


async def test_a_backend_crash_fails_safe_and_recovers() -> None:
    backend = ScriptedBackend()
    seen: list[tuple[bool, bool]] = []
    service = FlagService(backend, flag_entities(["svc-b"]), 60)
    service.subscribe(lambda old, new: seen.append((old.available, new.available)))
    await service.refresh()
    backend.fail = RuntimeError("secret-token-in-message")
    snapshot = await service.refresh()
    assert not snapshot.lane_enabled("svc-b")
    assert snapshot.error is not None and "RuntimeError" in snapshot.error
    assert "secret-token" not in snapshot.error
    assert gauge("torghut:svc-b") == 0 and gauge(GLOBAL_ENTITY) == 0
    backend.fail = None
    assert (await service.refresh()).lane_enabled("svc-b")
    assert seen == [(False, True), (True, False), (False, True)]


async def test_run_forever_refreshes_on_an_interval_and_closes() -> None:
    backend = ScriptedBackend()
    service = FlagService(backend, flag_entities(["svc-c"]), 0.05)
    task = asyncio.create_task(service.run_forever())
    while backend.calls < 3:
        await asyncio.sleep(0.02)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert backend.closed


async def test_a_failing_listener_does_not_block_others() -> None:
    service = FlagService(ScriptedBackend(), flag_entities([]), 60)
    calls: list[FlagSnapshot] = []

    def broken(old: FlagSnapshot, new: FlagSnapshot) -> None:
        raise ValueError("listener bug")

    service.subscribe(broken)
    service.subscribe(lambda old, new: calls.append(new))
    await service.refresh()
    assert len(calls) == 1
