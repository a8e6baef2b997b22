"""Last (event_ts, seq) seen per symbol, co-partitioned with the TA signals topic (key symbol).

A `WatermarkTracker` fronts the table with the latest positions in memory and writes to the table
by the policy of `streams.domain.signal_order.should_persist`; it forgets the memory on every
partition revocation, so a partition that comes back is read from the table again.
"""

from __future__ import annotations

import faust

from streams.domain.signal_order import WatermarkTracker
from streams.settings import Settings


def declare_watermarks(app: faust.App, settings: Settings) -> WatermarkTracker:
    table = app.Table(
        "signal-watermarks",
        partitions=settings.topic_partitions,
        key_type=str,
        value_type=str,  # "event_ms:seq"; str keys and values travel raw (utf-8)
        help="Last (event_ts, seq) per symbol: drops stale and duplicate TA signals.",
    )
    max_future_ms = int(settings.max_event_time_skew_seconds * 1000)
    tracker = WatermarkTracker(table, max_future_ms=max_future_ms)
    app.on_partitions_revoked.connect(tracker.forget)
    return tracker
