"""Account snapshot refresh of the lanes this worker owns (equity, buying power, positions)."""

from __future__ import annotations

from streams.app import app, settings
from streams.execution.runtime import lane_service_if_built, owned_accounts


async def refresh_account_snapshots() -> None:
    service = lane_service_if_built()
    if service is not None:
        await service.refresh_snapshots(owned_accounts(app, service))


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.snapshot_interval_seconds, name="account-snapshots")(
    refresh_account_snapshots
)
