"""Order-feed and reconciler counters (prometheus default registry), per account."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "torghut_order_feed_events_total",
    "Trade updates received, by attributed account and broker event type.",
    ["account", "event"],
)
DUPLICATES = Counter(
    "torghut_order_feed_duplicates_total",
    "Trade updates already stored (same fingerprint or source coordinates): v1/v2 copies, replays.",
    ["account"],
)
OUT_OF_ORDER = Counter(
    "torghut_order_feed_out_of_order_total",
    "Trade updates that would have moved an execution backwards (ignored).",
    ["account"],
)
UNLINKED = Counter(
    "torghut_order_feed_unlinked_total",
    "Trade updates that matched no execution of their account (stored, linked later).",
    ["account"],
)
UNATTRIBUTED = Counter(
    "torghut_order_feed_unattributed_total",
    "Trade updates no account could be found for: held in unattributed_order_events "
    "(multi-account) or given TRADING_ACCOUNT_LABEL (single-account).",
)
HELD = Gauge(
    "torghut_order_feed_unattributed_held",
    "Trade updates held in unattributed_order_events right now (set by the leader's sweep).",
)
RESOLVED = Counter(
    "torghut_order_feed_unattributed_resolved_total",
    "Held trade updates handed to their account once its order was known, by account.",
    ["account"],
)
APPLIED = Counter(
    "torghut_order_feed_applied_total",
    "Trade updates that moved an execution forward.",
    ["account"],
)
DROPPED = Counter(
    "torghut_order_feed_dropped_total",
    "Trade updates dead-lettered instead of applied, by reason.",
    ["reason"],
)
RECONCILE_RUNS = Counter(
    "torghut_reconciler_runs_total",
    "Reconciliations of one account, by outcome (ok, error, timeout).",
    ["account", "outcome"],
)
RECONCILE_FIXES = Counter(
    "torghut_reconciler_fixes_total",
    "Executions or decisions the reconciler moved forward from broker REST state.",
    ["account", "kind"],
)
RECONCILE_SECONDS = Histogram(
    "torghut_reconciler_duration_seconds",
    "Duration of one account's reconciliation.",
    ["account"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OVERFILLS = Counter(
    "torghut_order_fill_refused_total",
    "Order updates refused because their cumulative fill is above the order quantity "
    "(recorded in order_fill_refusals), by account and path (trade update, fill replay, REST).",
    ["account", "source"],
)
FILL_REPLAYS = Counter(
    "torghut_fill_replay_runs_total",
    "Fill replays (broker fill activities after the stored page token), by trigger and outcome.",
    ["account", "trigger", "outcome"],
)
FILLS_REPLAYED = Counter(
    "torghut_fill_replay_fills_total",
    "Broker fill activities read by fill replays and passed to the order-feed apply.",
    ["account"],
)
