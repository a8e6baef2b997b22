"""The `lanes` agent and its timers: account decisions (and re-driven ones) → each account's lane.

Wiring only; how decisions are read, dispatched, acked, resumed and re-driven is in
`streams/execution/orchestration.py`.
"""

from __future__ import annotations

from typing import Any

import faust
from mode import BaseSignalT

from streams.app import app, settings, topics
from streams.errors import guarded


@app.agent(topics.lane_input, name="lanes", concurrency=1)
async def lanes(stream: faust.StreamT[bytes]) -> None:
    """Account decisions (and re-driven ones) -> each account's execution lane and the broker."""
    await app.context.lanes_runner.run(stream)


@app.on_rebalance_complete.connect
async def tables_recovered(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """After every recovery (start, rebalance) the ledger is scanned for unfinished entries."""
    if app.has_context:
        app.context.lanes_runner.tables_recovered()


async def lanes_upkeep() -> None:
    """Re-drive parked decisions, resume after a rebalance, show controls, mirror cursors."""
    await guarded("lanes-upkeep", app.context.lanes_runner.upkeep)


async def refresh_account_snapshots() -> None:
    """Equity, buying power and positions of the lanes this worker owns."""
    await guarded("account-snapshots", app.context.lanes_runner.refresh_snapshots)


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=1.0, name="lanes-upkeep")(lanes_upkeep)
app.timer(interval=settings.snapshot_interval_seconds, name="account-snapshots")(
    refresh_account_snapshots
)


@app.on_before_shutdown.connect
async def close_worker(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    """Release the worker context (pool, broker clients, lag reader, ClickHouse)."""
    if app.has_context:
        await app.context.close()
