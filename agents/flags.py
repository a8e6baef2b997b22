"""Background refresh of the feature flags: every worker keeps its own in-memory snapshot."""

from __future__ import annotations

from streams.app import app
from streams.flags.service import get_flag_service


async def refresh_feature_flags() -> None:
    """Re-read the feature flags every TRADING_FLAGS_REFRESH_SECONDS (the hot path never waits)."""
    await get_flag_service().run_forever()


app.task(refresh_feature_flags)
