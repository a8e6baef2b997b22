"""Faust agents and timers: thin wiring from topics to the domain core.

Importing this package registers every agent on `streams.app.app`.
"""

import agents.clickhouse
import agents.control
import agents.lanes
import agents.monitor
import agents.snapshots  # noqa: F401
from agents import flags, order_feed, reconciler, signals  # noqa: F401
