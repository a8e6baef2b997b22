"""Observability timer: consumer lag, oldest unprocessed age, recovery and lane gauges."""

from __future__ import annotations

import logging
from typing import Any

from mode import BaseSignalT

from streams.app import app, settings
from streams.observability.runtime import for_app

logger = logging.getLogger(__name__)


@app.on_worker_init.connect
def show_every_lane(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    """Put every configured account on the status board before any traffic."""
    for_app(app, settings).configure_lanes()


async def observability_monitor() -> None:
    """Refresh consumer lag (records and seconds, read from the broker), the oldest unprocessed
    message age, table recovery remaining and lane up/health gauges, and each lane's lag."""
    try:
        await for_app(app, settings).refresh()
    except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the last values; try again
        logger.warning("observability refresh failed: %s: %s", type(exc).__name__, exc)


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.monitor_interval_seconds, name="observability-monitor")(
    observability_monitor
)


@app.on_before_shutdown.connect
async def close_observability(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    await for_app(app, settings).close()
