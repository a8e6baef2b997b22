"""The TA freshness check: newest `event_ts` per symbol class from ClickHouse into the state."""

from __future__ import annotations

import logging
import math
from datetime import datetime, timedelta

from streams.clickhouse import metrics
from streams.clickhouse.client import ClickHouse, ClickHouseError
from streams.clickhouse.queries import latest_by_class
from streams.domain.freshness import FreshnessState

logger = logging.getLogger(__name__)

MIN_HORIZON = timedelta(minutes=15)


def query_horizon(slo_seconds: float) -> timedelta:
    """How far back the query looks: the last few SLOs (cheap: a couple of day partitions)."""
    return max(MIN_HORIZON, timedelta(seconds=10 * slo_seconds))


async def refresh_freshness(ch: ClickHouse, state: FreshnessState, now: datetime) -> None:
    """One check; a failure is recorded (and counted) and the state ages towards stale."""
    try:
        found = await latest_by_class(
            ch,
            since=now - query_horizon(state.slo_seconds),
            fresh_since=now - timedelta(seconds=state.slo_seconds),
        )
    except ClickHouseError as exc:
        metrics.freshness_errors.inc()
        state.record_error(str(exc))
        logger.warning("TA freshness check failed", extra={"error": str(exc)[:200]})
    else:
        state.record(found.latest, now, found.fresh_symbols)
    publish_gauges(state, now)


def publish_gauges(state: FreshnessState, now: datetime) -> None:
    for cls, fr in state.classes(now).items():
        age = math.nan if fr.age_seconds is None else fr.age_seconds
        metrics.ta_freshness.labels(**{"class": cls.value}).set(age)
        metrics.ta_stale.labels(**{"class": cls.value}).set(1.0 if fr.stale else 0.0)
