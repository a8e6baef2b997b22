"""Reconciler timer: REST reconciliation of the accounts whose partition this worker holds.

Ownership (`streams.ownership`): the worker assigned an account's partition of the decisions
topic (and of the co-partitioned account-updates topic) runs its lane and reconciles it.
"""

from __future__ import annotations

from streams.app import app, settings
from streams.errors import guarded


async def reconcile_owned_accounts() -> None:
    """Every owned account concurrently, each bounded by its own time budget."""
    await guarded("reconciler", app.context.reconciliation.reconcile_owned)


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.reconcile_interval_seconds, name="reconciler")(reconcile_owned_accounts)
