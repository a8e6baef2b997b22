"""Feature flags (static env/file or Flipt), refreshed in the background, read as a snapshot.

Global entity `torghut`; one entity `torghut:<account_label>` per lane. See `core` for how a lane's
effective value is combined and what "fail safe" means when the flag service is down.
"""

from streams.flags.core import (
    ALL_KEYS,
    CRYPTO_ENABLED,
    CRYPTO_LIVE_ENABLED,
    GLOBAL_ENTITY,
    KILL_SWITCH,
    LIVE_ENABLED,
    MULTI_ACCOUNT_ENABLED,
    TRADING_ENABLED,
    UNAVAILABLE_REASON,
    EntityFlags,
    FlagSnapshot,
    lane_entity,
)

__all__ = [
    "ALL_KEYS",
    "CRYPTO_ENABLED",
    "CRYPTO_LIVE_ENABLED",
    "GLOBAL_ENTITY",
    "KILL_SWITCH",
    "LIVE_ENABLED",
    "MULTI_ACCOUNT_ENABLED",
    "TRADING_ENABLED",
    "UNAVAILABLE_REASON",
    "EntityFlags",
    "FlagSnapshot",
    "lane_entity",
]
