"""What the status pages show of the ClickHouse source and the TA freshness check.

`clickhouse_status()` is a JSON-able dict for `/trading/status`; `freshness_health()` is the part
`/trading/health` needs. Neither imports clickhouse-connect.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.common import iso_millis
from streams.domain.ch_cursor import RowKey
from streams.domain.freshness import FreshnessState
from streams.observability.scrub import scrub_text


@dataclass
class SourceStatus:
    """Progress of the poll source on this worker (only the leader polls)."""

    enabled: bool = False
    polling: bool = False  # this worker is the leader and has polled
    last_poll_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    published_total: int = 0
    late_total: int = 0
    cursor: RowKey | None = None

    def record_poll(self, at: datetime, published: int, late: int, cursor: RowKey | None) -> None:
        self.polling = True
        self.last_poll_at = at
        self.published_total += published
        self.late_total += late
        self.cursor = cursor or self.cursor
        self.last_error = None

    def record_error(self, at: datetime, error: str) -> None:
        self.last_error = scrub_text(error)[:300]
        self.last_error_at = at

    def as_dict(self) -> dict[str, Any]:
        cursor = self.cursor
        return {
            "enabled": self.enabled,
            "polling": self.polling,
            "last_poll_at": _iso(self.last_poll_at),
            "last_error": self.last_error,
            "last_error_at": _iso(self.last_error_at),
            "published_total": self.published_total,
            "late_total": self.late_total,
            "cursor": None
            if cursor is None
            else {
                "event_ts": iso_millis(cursor.event_ts),
                "symbol": cursor.symbol,
                "seq": cursor.seq,
            },
        }


def _iso(at: datetime | None) -> str | None:
    return None if at is None else iso_millis(at)


def clickhouse_status(
    source: SourceStatus, freshness: FreshnessState, now: datetime | None = None
) -> dict[str, Any]:
    """`{"source": {...}, "freshness": {...}}` for `/trading/status`."""
    return {"source": source.as_dict(), "freshness": freshness.snapshot(now)}


def freshness_health(freshness: FreshnessState, now: datetime | None = None) -> dict[str, Any]:
    """For `/trading/health`: `ta_stale` is True when the check is on and a class is stale.

    Stale TA is a degraded upstream, not a broken worker: a restart would not fix it, so it
    should not fail a liveness probe; with `TRADING_TA_FRESHNESS_BLOCK_ORDERS` the lanes
    refuse new orders for the affected class (`ta_stale`).
    """
    snap = freshness.snapshot(now)
    return {"ta_stale": bool(snap.get("stale", False)), "ta_freshness": snap}
