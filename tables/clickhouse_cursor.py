"""The ClickHouse poll source's cursor state (`streams.domain.ch_cursor`), changelog-backed.

A global table (every worker holds all of it) with one partition, written by the leader from a
timer (the partitioner picks the partition: there is no stream event). Whichever worker becomes
leader next resumes from the same state. Declared only when `TRADING_SIGNAL_SOURCE=clickhouse`.

Its local store is memory: faust's RocksDB store only accepts writes made while a stream event
is being processed, and a single small key recovers from its compacted changelog in no time.
"""

from __future__ import annotations

from typing import Any

import faust


def declare_clickhouse_cursor(app: faust.App) -> Any:
    # partitions=1 + recovery_buffer_size=1: faust's advice against GlobalTable recovery loops.
    return app.GlobalTable(
        "clickhouse-cursor",
        partitions=1,
        recovery_buffer_size=1,
        use_partitioner=True,
        store="memory://local",  # a bare "memory://" URL is falsy and faust would ignore it
        key_type=str,  # json keys and values (faust picks json for non-bytes types)
        help="Keyset cursor, lookback marks and floor of the ClickHouse ta_signals poll source.",
    )
