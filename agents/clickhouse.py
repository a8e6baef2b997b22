"""ClickHouse timers: the leader's `ta_signals` poll source and every worker's TA freshness check.

Neither is registered unless configured: the poll source with `TRADING_SIGNAL_SOURCE=clickhouse`
(only then is the cursor table declared), the check with `TRADING_TA_FRESHNESS_ENABLED=true`;
otherwise clickhouse-connect/chdb are never imported. The work is in `streams/clickhouse/worker.py`.
"""

from __future__ import annotations

from streams.app import app, settings, tables, topics

if tables.clickhouse_cursor is not None:
    cursor_table = tables.clickhouse_cursor

    async def clickhouse_poll() -> None:
        """Leader only: publish the new `ta_signals` rows (pages until caught up)."""
        await app.context.clickhouse.poll(cursor_table, topics.signals, flush=app.producer.flush)

    app.timer(interval=settings.clickhouse_poll_interval_seconds, on_leader=True)(clickhouse_poll)


if settings.ta_freshness_enabled:

    async def ta_freshness_first_check() -> None:
        """Check once at start: the timer's first tick comes one interval later."""
        await app.context.clickhouse.check_freshness()

    async def ta_freshness() -> None:
        """Every worker: newest TA event time per class vs the SLO (lanes consult it)."""
        await app.context.clickhouse.check_freshness()

    app.task(ta_freshness_first_check)
    app.timer(interval=settings.ta_freshness_interval_seconds)(ta_freshness)
