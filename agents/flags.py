"""Background refresh of the feature flags: every worker keeps its own in-memory snapshot."""

from __future__ import annotations

from streams.app import app


async def refresh_feature_flags() -> None:
    """Re-read the feature flags every TRADING_FLAGS_REFRESH_SECONDS (the hot path never waits)."""
    await app.context.flags.run_forever()


app.task(refresh_feature_flags)
