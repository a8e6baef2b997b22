"""Sweep of held trade updates: v1 events no account owned yet → their account, once known.

On the leader only: one sweeper at a time (a second would only re-publish duplicates).
"""

from __future__ import annotations

from streams.app import app, settings


async def sweep_unattributed() -> None:
    """Hand each held event whose order now has an owner to that account's updates."""
    await app.context.order_feed.sweep.sweep()


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.unattributed_sweep_seconds, on_leader=True, name="unattributed-sweep")(
    sweep_unattributed
)
