"""Recovery watchdog: a table recovery that never finishes stops the worker (restarted)."""

from __future__ import annotations

from streams.app import app

CHECK_INTERVAL_SECONDS = 5.0


async def recovery_watchdog() -> None:
    """Check every few seconds (guarded); past TORGHUT_RECOVERY_WATCHDOG_SECONDS: exit 70."""
    await app.context.observability.recovery_watchdog.run_forever(CHECK_INTERVAL_SECONDS)


# Registered without decorator syntax: faust's `task` decorator is untyped.
app.task(recovery_watchdog)
