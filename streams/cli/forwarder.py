"""`faust -A streams.app forwarder`: run the trade-updates forwarder (no worker, no agents)."""

from __future__ import annotations

import asyncio
from typing import Any

from streams.app import app, settings
from streams.forwarder.runner import forward_until_stopped


@app.command()
async def forwarder(self: Any) -> None:
    """Forward every enabled account's Alpaca trade updates to the v2 (and v1) topics."""
    await forward_until_stopped(settings, asyncio.Event())
