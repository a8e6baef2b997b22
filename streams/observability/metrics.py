"""Cross-cutting Prometheus metrics (default registry), defined once here.

Lane counters (decisions, orders, rejections, broker errors) and the signal→ack histogram are fed by
`streams.observability.status` so that callers record an event once; broker call latency is timed
by the broker adapter (`broker_call_timer`, looked up once per account and call). Lag, recovery
and lane gauges are refreshed by the monitor timer and at every scrape
(`streams.observability.worker`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

SIGNAL_TO_BROKER_ACK = Histogram(
    "torghut_signal_to_broker_ack_seconds",
    "Signal event time to broker acknowledgement of the resulting order.",
    ["account"],
    buckets=LATENCY_BUCKETS,
)
BROKER_CALL = Histogram(
    "torghut_broker_call_seconds",
    "Duration of one broker API call.",
    ["account", "call"],
    buckets=LATENCY_BUCKETS,
)
BROKER_ERRORS = Counter(
    "torghut_broker_errors_total",
    "Failed broker calls by error class (auth, rate_limit, timeout, rejected, server, ...).",
    ["account", "class"],
)
LANE_DECISIONS = Counter(
    "torghut_lane_decisions_total", "Decisions a lane has taken up.", ["account"]
)
LANE_ORDERS = Counter(
    "torghut_lane_orders_submitted_total", "Orders the broker acknowledged.", ["account"]
)
LANE_REJECTIONS = Counter(
    "torghut_lane_rejections_total",
    "Decisions a lane rejected before submission, by reason.",
    ["account", "reason"],
)
LANE_DEFERRALS = Counter(
    "torghut_lane_deferrals_total",
    "Decisions parked in the ledger because their lane had 16 unfinished (re-driven as it has "
    "room).",
    ["account"],
)
LANE_REDRIVES = Counter(
    "torghut_lane_redrives_total",
    "Decisions sent to the lane retry topic: reason=deferred (the lane had room for a deferred "
    "one), reason=parked (a parked one's retry time came).",
    ["account", "reason"],
)
SLOT_CONFLICTS = Counter(
    "torghut_decision_slot_conflicts_total",
    "Decisions refused because another decision already took the same (account, symbol, "
    "timeframe, signal event time).",
    ["account"],
)
PERSIST_QUARANTINED = Counter(
    "torghut_decisions_persist_refused_total",
    "Decisions whose Postgres row was refused for its data (persist_failed:<sqlstate>): "
    "rejected if not sent yet, otherwise closed in the ledger only.",
    ["account"],
)
LANE_UP = Gauge(
    "torghut_lane_up", "1 when the lane runs on this worker (exported by its owner).", ["account"]
)
LANE_HEALTHY = Gauge(
    "torghut_lane_healthy", "1 when the lane is healthy (see /trading/health).", ["account"]
)
KILL_SWITCH_ENGAGED = Gauge(
    "torghut_kill_switch_engaged", "1 when the lane's kill switch is engaged.", ["account"]
)
TRADING_STATE = Gauge(
    "torghut_trading_state",
    "1 for the lane's effective trading state (active, reducing, halted), 0 for the others.",
    ["account", "state"],
)
CONSUMER_LAG_RECORDS = Gauge(
    "torghut_consumer_lag_records",
    "Records between the group's committed offset and the log end (partitions this worker owns).",
    ["topic", "partition"],
)
CONSUMER_COMMITTED_OFFSET = Gauge(
    "torghut_consumer_committed_offset",
    "The group's committed offset (partitions this worker owns); flat while lag > 0: stuck.",
    ["topic", "partition"],
)
CONSUMER_LAG_SECONDS = Gauge(
    "torghut_consumer_lag_seconds",
    "Age of the next unconsumed record (0 when caught up).",
    ["topic", "partition"],
)
OLDEST_UNPROCESSED_AGE = Gauge(
    "torghut_oldest_unprocessed_message_age_seconds",
    "Age of the oldest unprocessed record over the partitions this worker owns.",
)
TABLE_RECOVERY_REMAINING = Gauge(
    "torghut_table_recovery_remaining_records",
    "Changelog records left to restore (active: blocks readiness; standby: replicas).",
    ["kind"],
)
READY = Gauge("torghut_ready", "1 when /readyz answers ready.")
POSITION_DRIFT = Gauge(
    "torghut_position_drift",
    "Broker position minus the position implied by this system's fills (and the account's "
    "baseline), per account and symbol, while a drift lasts longer than its grace period.",
    ["account", "symbol"],
)
CONTROL_FEED_LAG_RECORDS = Gauge(
    "torghut_control_feed_lag_records",
    "Control topic (kill switches) records this worker's reader is behind the end.",
)
CONTROL_FEED_STALE_SECONDS = Gauge(
    "torghut_control_feed_stale_seconds",
    "Seconds since the control topic reader last advanced (0 before its first catch-up).",
)
CONTROL_FEED_STALE_THRESHOLD = Gauge(
    "torghut_control_feed_stale_threshold_seconds",
    "TORGHUT_CONTROL_FEED_STALE_SECONDS: past it the lanes refuse new orders.",
)
CONTROL_FEED_CAUGHT_UP = Gauge(
    "torghut_control_feed_caught_up", "1 once the control topic was replayed to its end."
)


def observe_signal_to_ack(account: str, signal_at: datetime, ack_at: datetime) -> None:
    SIGNAL_TO_BROKER_ACK.labels(account=account).observe(
        max(0.0, (ack_at - signal_at).total_seconds())
    )


@contextmanager
def time_broker_call(account: str, call: str) -> Iterator[None]:
    """Time one broker call: `with time_broker_call("acct-a", "submit_order"): ...`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        BROKER_CALL.labels(account=account, call=call).observe(time.perf_counter() - started)


def broker_call_timer(account: str, call: str) -> Histogram:
    """The histogram child of one account's call, looked up once (`with timer.time(): ...`)."""
    return BROKER_CALL.labels(account=account, call=call)


class LabelledGauge:
    """Sets a labelled gauge to a full new set of values, removing series that disappeared."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._seen: set[tuple[str, ...]] = set()

    def replace(self, values: Iterable[tuple[tuple[str, ...], float]]) -> None:
        current: set[tuple[str, ...]] = set()
        for labels, value in values:
            self._gauge.labels(*labels).set(value)
            current.add(labels)
        for stale in self._seen - current:
            with suppress(KeyError):
                self._gauge.remove(*stale)
        self._seen = current


consumer_lag_records = LabelledGauge(CONSUMER_LAG_RECORDS)
consumer_lag_seconds = LabelledGauge(CONSUMER_LAG_SECONDS)
consumer_committed_offset = LabelledGauge(CONSUMER_COMMITTED_OFFSET)
lane_up = LabelledGauge(LANE_UP)
lane_healthy = LabelledGauge(LANE_HEALTHY)
kill_switch_engaged = LabelledGauge(KILL_SWITCH_ENGAGED)
trading_state = LabelledGauge(TRADING_STATE)


def exposition() -> tuple[bytes, str]:
    """The default registry in Prometheus text format, with its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
