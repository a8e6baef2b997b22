"""Changelog-backed tables. Importing this package registers them on `streams.app.app`."""

from tables import (  # noqa: F401
    clickhouse_cursor,
    lane_cursors,
    ledger,
    order_index,
    signal_watermarks,
)
