"""What the lane ledger's changelog tells about each order: when it was acknowledged, and where
its time went.

Every ledger transition is a changelog record (key `account|hash`, value the entry's JSON) with
the producer's timestamp. Per order the lane writes, in order: submitting (beside the decision
row), then submitted (persisted) after the execution row (older lanes also wrote `received` and
`planned` first, `planned (persisted)` after the decision row, and `submitted` before its rows).
The gaps between consecutive records are the lane's steps, the first one measured from the
entry's `received_at`; `queued` is the decision's wait from fan-out (`emitted_at`) to the lane
(`received_at`).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.report import latency_summary

Order = tuple[str, str]  # (account, client_order_id = decision hash)

# The first step, from `received_at`, by the first state the lane writes.
FIRST_STEPS = {
    "planned": "plan + durable `planned`",  # lanes that wrote `planned` (not `received`)
    "submitting": "plan + controls + decision row ‖ durable `submitting`",
}
STEPS = {
    ("received", False, "planned", False): "plan (incl. durable `received`)",
    ("planned", False, "planned", True): "persist decision row",
    ("planned", True, "submitting", False): "controls + durable `submitting`",
    (
        "planned",
        False,
        "submitting",
        False,
    ): "decision row + controls + durable `submitting`",
    ("submitting", False, "submitted", False): "broker POST + durable `submitted`",
    # lanes that write `submitted` once, after the rows: the POST and the execution row
    ("submitting", False, "submitted", True): "broker POST + execution row",
    ("submitted", False, "submitted", True): "persist decision + execution rows",
}


@dataclass
class LedgerView:
    acks: dict[Order, tuple[float, float]] = field(default_factory=dict)  # signal→ack s, ack at
    steps: dict[Order, dict[str, float]] = field(default_factory=dict)  # step → ms

    def breakdown(self, orders: Iterable[Order]) -> dict[str, dict[str, float | int | None]]:
        """Per step: count, p50/p95/p99/mean in ms, over the given orders."""
        per_step: dict[str, list[float]] = defaultdict(list)
        for order in orders:
            for step, ms in self.steps.get(order, {}).items():
                per_step[step].append(ms)
        return {step: latency_summary(values) for step, values in per_step.items()}


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass(frozen=True)
class Change:
    timestamp_ms: int
    state: str
    persisted: bool
    entry: dict[str, Any]


def read_ledger(records: Iterable[tuple[bytes | None, bytes | None, int]]) -> LedgerView:
    """Records as (key, value, timestamp ms), in partition order."""
    view = LedgerView()
    history: dict[Order, list[Change]] = defaultdict(list)
    for _, value, timestamp in records:
        if value is None:
            continue
        entry = json.loads(value)
        decision = entry["decision"]
        order = (decision["account_label"], decision["decision_hash"])
        history[order].append(Change(timestamp, entry["state"], entry["persisted"], entry))
        if entry["state"] == "submitted" and entry.get("submitted_at") and order not in view.acks:
            acked = _when(entry["submitted_at"])
            latency = (acked - _when(decision["event_ts"])).total_seconds()
            view.acks[order] = (latency, acked.timestamp())
    for order, changes in history.items():
        view.steps[order] = _steps(changes)
    return view


def _steps(changes: list[Change]) -> dict[str, float]:
    out: dict[str, float] = {}
    first = changes[0]
    emitted = first.entry["decision"].get("emitted_at")
    received_at = first.entry.get("received_at")
    if received_at and emitted:
        waited = _when(received_at) - _when(emitted)
        out["queued before the lane"] = 1000.0 * waited.total_seconds()
    first_step = FIRST_STEPS.get(first.state)
    if received_at and first_step is not None:
        out[first_step] = first.timestamp_ms - 1000.0 * _when(received_at).timestamp()
    for a, b in itertools.pairwise(changes):
        step = STEPS.get((a.state, a.persisted, b.state, b.persisted))
        if step is not None and step not in out:
            out[step] = float(b.timestamp_ms - a.timestamp_ms)
    return out
