"""Readiness checks: recovery state, cached probes with timeouts, redacted failure details."""

from __future__ import annotations

import asyncio

from streams.observability.readiness import (
    CachedProbe,
    Check,
    PostgresProbe,
    Readiness,
    recovery_check,
)


def test_recovery_check_blocks_until_done_and_during_rebalances() -> None:
    assert not recovery_check(completed=False, in_recovery=True, rebalancing=True, remaining=9).ok
    assert (
        "9 records"
        in recovery_check(completed=False, in_recovery=True, rebalancing=False, remaining=9).detail
    )
    assert not recovery_check(completed=True, in_recovery=True, rebalancing=True, remaining=1).ok
    assert not recovery_check(completed=True, in_recovery=False, rebalancing=True, remaining=0).ok
    assert recovery_check(completed=True, in_recovery=False, rebalancing=False, remaining=0).ok


def test_readiness_needs_every_check() -> None:
    ready = Readiness({"a": Check(True), "b": Check(True)})
    not_ready = Readiness({"a": Check(True), "b": Check(False, "down")})
    assert ready.ready and not not_ready.ready
    assert not_ready.as_dict() == {
        "ready": False,
        "checks": {"a": {"ok": True, "detail": "ok"}, "b": {"ok": False, "detail": "down"}},
    }


async def test_probe_result_is_cached_for_its_ttl() -> None:
    calls = 0
    now = [0.0]

    async def probe() -> None:
        nonlocal calls
        calls += 1

    cached = CachedProbe(probe, ttl=3.0, clock=lambda: now[0])
    assert (await cached.check()).ok
    now[0] = 2.9
    await cached.check()
    assert calls == 1
    now[0] = 3.1
    await cached.check()
    assert calls == 2


async def test_probe_timeout_and_failure_are_not_ready_and_redacted() -> None:
    async def hangs() -> None:
        await asyncio.sleep(10)

    async def fails() -> None:
        raise OSError("connect to postgresql://torghut:pw-secret@db/torghut refused")

    slow = await CachedProbe(hangs, timeout=0.05).check()
    assert not slow.ok and "0.05" in slow.detail
    failed = await CachedProbe(fails).check()
    assert not failed.ok and "OSError" in failed.detail
    assert "pw-secret" not in failed.detail


async def test_postgres_probe_reports_an_unreachable_database_without_its_password() -> None:
    probe = PostgresProbe("postgresql+asyncpg://torghut:pg-secret@127.0.0.1:1/torghut")
    check = await CachedProbe(probe).check()
    assert not check.ok
    assert "pg-secret" not in check.detail
    await probe.close()
