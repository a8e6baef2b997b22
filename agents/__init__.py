"""Faust agents and timers: thin wiring from topics to the domain core.

Importing this package registers every agent on `streams.app.app`.
"""

from agents import (  # noqa: F401
    clickhouse,
    control,
    flags,
    lanes,
    monitor,
    prices,
    reconciler,
    recovery,
    signals,
    trade_updates,
    unattributed,
)
