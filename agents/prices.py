"""Reference prices of the price collar: every worker follows the recent TA signals."""

from __future__ import annotations

from streams.app import app


async def follow_reference_prices() -> None:
    """Read the signals topic (no group) for the latest price of each symbol."""
    await app.context.run_price_feed()


# Registered without decorator syntax: faust's `task` decorator is untyped.
app.task(follow_reference_prices)
