"""Observability timer: consumer lag, oldest unprocessed age, recovery and lane gauges."""

from __future__ import annotations

from streams.app import app, settings


async def observability_monitor() -> None:
    """Refresh consumer lag (records and seconds, read from the broker), the oldest unprocessed
    message age, table recovery remaining and lane up/health gauges, and each lane's lag."""
    await app.context.observability.refresh_guarded()


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.monitor_interval_seconds, name="observability-monitor")(
    observability_monitor
)
