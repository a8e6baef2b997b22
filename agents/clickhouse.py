"""ClickHouse timers: the leader's `ta_signals` poll source and every worker's TA freshness check.

- `TRADING_SIGNAL_SOURCE=clickhouse`: the leader polls `ta_signals` after the cursor
  (`tables.clickhouse_cursor`) and publishes the rows onto the signals topic, so the same
  `signals` agent (dedupe watermark, strategy runtime, fan-out) handles them.
- `TRADING_TA_FRESHNESS_ENABLED=true`: every worker (the lanes of each worker ask it) refreshes
  `streams.domain.freshness.freshness_state` from ClickHouse.
Neither is registered otherwise, and then clickhouse-connect/chdb are never imported.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from functools import cache
from typing import Any

from streams.app import app, settings
from streams.domain.freshness import freshness_state
from streams.settings import SignalSource

log = logging.getLogger(__name__)

freshness_state.configure(
    enabled=settings.ta_freshness_enabled,
    slo_seconds=settings.ta_freshness_slo_seconds,
    block_orders=settings.ta_freshness_block_orders,
)


def _now() -> datetime:
    return datetime.now(UTC)


async def _dead_letter_row(row: dict[str, Any], error: str) -> None:
    from streams.dlq import send_dead_letter

    await send_dead_letter(
        reason="clickhouse_row_invalid",
        topic="clickhouse:ta_signals",
        partition=None,
        offset=None,
        key=str(row.get("symbol", "")).encode(),
        value=json.dumps(row, default=str, sort_keys=True).encode(),
        error=error,
    )


@cache
def _enabled_accounts() -> tuple[str, ...]:
    from streams.domain.accounts import load_registry

    return tuple(a.label for a in load_registry(settings, strict=False).enabled())


async def _worker_repository() -> Any:
    from streams.order_feed.context import repository

    return await repository(settings)


if settings.signal_source is SignalSource.clickhouse:
    from streams.clickhouse import metrics as ch_metrics
    from streams.clickhouse.source import PollSource
    from streams.clickhouse.status import source_status
    from streams.clickhouse.worker import LazyRepositoryMirror, build_source
    from streams.topics import signals_topic
    from tables.clickhouse_cursor import clickhouse_cursor

    source_status.enabled = True
    _source: PollSource | None = None

    def _poll_source() -> PollSource:
        global _source
        if _source is None:
            _source = build_source(
                settings,
                clickhouse_cursor,
                signals_topic,
                flush=app.producer.flush,
                mirror=LazyRepositoryMirror(_worker_repository, _enabled_accounts),
                on_invalid=_dead_letter_row,
            )
        return _source

    async def clickhouse_poll() -> None:
        """Leader only: publish the new `ta_signals` rows (pages until caught up)."""
        try:
            await _poll_source().poll_until_caught_up()
        except Exception as exc:  # noqa: BLE001 - the next tick retries from the saved cursor
            ch_metrics.poll_errors.inc()
            source_status.record_error(_now(), f"{type(exc).__name__}: {exc}")
            error = source_status.last_error
            log.warning("clickhouse poll failed: %s", error, extra={"error": error})

    app.timer(interval=settings.clickhouse_poll_interval_seconds, on_leader=True)(clickhouse_poll)


if settings.ta_freshness_enabled:
    from streams.clickhouse.freshness import refresh_freshness
    from streams.clickhouse.worker import shared_clickhouse

    async def _check_freshness() -> None:
        try:
            await refresh_freshness(shared_clickhouse(settings), freshness_state, _now())
        except Exception as exc:  # noqa: BLE001 - a failed check must not stop the timer
            freshness_state.record_error(type(exc).__name__)
            log.warning("TA freshness check failed: %s", type(exc).__name__)

    async def ta_freshness_first_check() -> None:
        """Check once at start: the timer's first tick comes one interval later."""
        await _check_freshness()

    async def ta_freshness() -> None:
        """Every worker: newest TA event time per class vs the SLO (lanes consult it)."""
        await _check_freshness()

    app.task(ta_freshness_first_check)
    app.timer(interval=settings.ta_freshness_interval_seconds)(ta_freshness)
