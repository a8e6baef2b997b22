"""Prometheus metrics of the ClickHouse source and the TA freshness check (defined once here)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

rows_published = Counter(
    "torghut_clickhouse_rows_published_total",
    "ta_signals rows published onto the signals topic by the ClickHouse poll source.",
)
rows_late = Counter(
    "torghut_clickhouse_rows_late_total",
    "Rows read below the cursor (landed late, caught by the lookback window).",
)
rows_dropped = Counter(
    "torghut_clickhouse_rows_dropped_total",
    "Rows refused by the cursor state (already handed on, or outside the window).",
)
rows_invalid = Counter(
    "torghut_clickhouse_rows_invalid_total",
    "Rows that do not convert to a TaSignal (skipped past, dead-lettered).",
)
poll_errors = Counter(
    "torghut_clickhouse_poll_errors_total",
    "Failed polls of the ClickHouse source (query, publish or cursor write).",
)
cursor_lag = Gauge(
    "torghut_clickhouse_cursor_lag_seconds",
    "Wall clock minus the event time of the ClickHouse source cursor.",
)
cursor_mirror_errors = Counter(
    "torghut_clickhouse_cursor_mirror_errors_total",
    "Failed mirrors of the source cursor to Postgres trade_cursor.",
    ["account"],
)
ta_freshness = Gauge(
    "torghut_ta_freshness_seconds",
    "Age of the newest TA signal per symbol class (NaN when none is known).",
    ["class"],
)
ta_stale = Gauge(
    "torghut_ta_stale",
    "1 when the newest TA signal of the class is older than the SLO (or unknown).",
    ["class"],
)
freshness_errors = Counter(
    "torghut_ta_freshness_check_errors_total", "Failed TA freshness queries against ClickHouse."
)
