"""Live status of every account lane: what `/trading/status`, `/trading/health` and `lanes` show.

Each lane owns its own `LaneStatus`; nothing one lane records can change another lane's state (the
reference implementation let the next lane's success clear a failing lane's error).

Health rule: an enabled lane this worker runs (or may run: ownership unknown) is unhealthy when
- its last broker call failed with a non-retryable error class (auth, permission, ...), or
- broker errors have persisted for `error_grace_seconds` (no success since the first error) and are
  still occurring (the last one is less than `error_grace_seconds` old), or
- its feature flags are unavailable (the lane fails safe and blocks orders), or
- it is down: the lane agent is not running here, or the lane called `mark_down(reason)`.
An engaged kill switch is *not* unhealthy: it is an operator's decision, shown on the page.
Disabled lanes, and lanes whose partition another worker owns, are never unhealthy here.

Recording an event also feeds the per-account Prometheus counters (decisions, orders, rejections,
broker errors, signal→ack latency), so that callers record each event once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.observability import metrics
from streams.observability.scrub import scrub_text

NON_RETRYABLE_ERROR_CLASSES = frozenset(
    {"auth", "unauthorized", "permission", "forbidden", "config", "account_blocked"}
)
DEFAULT_ERROR_GRACE_SECONDS = 60.0

Clock = Callable[[], datetime]


def error_class_of(kind: str) -> str:
    """`reconcile:auth` → `auth`: callers may prefix the class with the failing activity."""
    return kind.rsplit(":", 1)[-1].strip().lower()


def utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


@dataclass
class _Event:
    decision_hash: str
    at: datetime
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"decision_hash": self.decision_hash, "at": _iso(self.at)}
        if self.reasons:
            out["reasons"] = list(self.reasons)
        return out


@dataclass
class _Error:
    kind: str
    message: str
    at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "at": _iso(self.at)}


@dataclass
class LaneStatus:
    """Mutable status of one account lane; every method touches this lane only."""

    account: str
    clock: Clock = utc_now
    error_grace_seconds: float = DEFAULT_ERROR_GRACE_SECONDS
    mode: str | None = None
    enabled: bool = False
    owned: bool | None = None  # this worker holds the lane's partition (None: not known yet)
    agent_running: bool | None = None  # the lane agent runs here (None: not known yet)
    down_reason: str | None = None
    flags: dict[str, bool | None] = field(default_factory=dict)
    flags_available: bool = True
    kill_switch_engaged: bool = False
    kill_switch_reason: str | None = None
    # The effective trading state (issue #17): active / reducing / halted, and who set it why.
    trading_state: dict[str, Any] = field(default_factory=lambda: {"state": "active"})
    control_action: dict[str, Any] | None = None  # the last kill-switch action / audit done here
    last_decision: _Event | None = None
    last_submission: _Event | None = None
    last_rejection: _Event | None = None
    last_error: _Error | None = None
    last_ok_at: datetime | None = None
    database_unavailable: str | None = None  # why this lane cannot reach Postgres, or None
    errors_since: datetime | None = None
    consecutive_errors: int = 0
    decisions_seen: int = 0
    submissions: int = 0
    rejections: int = 0
    # Backpressure: decisions deferred for lack of room, re-drives sent (of deferred decisions
    # when the lane had room; of parked ones when their time came), re-drives read back while
    # the lane was full again, and decisions waiting in the backlog now.
    deferrals: int = 0
    redrives: dict[str, int] = field(default_factory=lambda: {"deferred": 0, "parked": 0})
    deferred_again: int = 0
    backlog: int = 0
    ledger_size: int | None = None
    cursor: dict[str, Any] = field(default_factory=dict)
    lag: list[dict[str, Any]] = field(default_factory=list)
    # Start-up reconciliation of the lane (issue #17): state pending/reconciling/retrying/ready.
    reconciliation: dict[str, Any] = field(default_factory=dict)
    # Symbol → broker position minus the position implied by this system's fills, while drifted.
    position_drift: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    # ---- configuration and liveness
    def configure(self, *, mode: str | None = None, enabled: bool | None = None) -> None:
        with self._lock:
            if mode is not None:
                self.mode = mode
            if enabled is not None:
                self.enabled = enabled

    def mark_down(self, reason: str) -> None:
        """The lane cannot run (e.g. its broker client could not be built)."""
        with self._lock:
            self.down_reason = scrub_text(reason)

    def mark_up(self) -> None:
        with self._lock:
            self.down_reason = None

    def set_placement(self, *, owned: bool | None, agent_running: bool | None) -> None:
        """Where the lane runs (set by the monitor from the worker's assignment)."""
        with self._lock:
            self.owned = owned
            self.agent_running = agent_running

    @property
    def up(self) -> bool:
        return self.owned is not False and self.agent_running is not False and not self.down_reason

    # ---- traffic
    def record_decision(self, decision_hash: str, at: datetime | None = None) -> None:
        with self._lock:
            self.last_decision = _Event(decision_hash, at or self.clock())
            self.decisions_seen += 1
        metrics.LANE_DECISIONS.labels(account=self.account).inc()

    def record_submission(
        self, decision_hash: str, at: datetime | None = None, *, signal_at: datetime | None = None
    ) -> None:
        """The broker acknowledged an order (also a successful broker call).

        `signal_at` (the signal's event time) feeds the signal→broker-ack latency histogram.
        """
        with self._lock:
            now = at or self.clock()
            self.last_submission = _Event(decision_hash, now)
            self.submissions += 1
            self._clear_errors(now)
        metrics.LANE_ORDERS.labels(account=self.account).inc()
        if signal_at is not None:
            metrics.observe_signal_to_ack(self.account, signal_at, now)

    def record_deferral(self) -> None:
        """A decision was parked because its lane had no room (`Lane.defer`)."""
        with self._lock:
            self.deferrals += 1
        metrics.LANE_DEFERRALS.labels(account=self.account).inc()

    def record_redrives(self, reason: str, n: int, *, backlog: int, deferred_again: int) -> None:
        """`n` decisions sent to the retry topic: `deferred` (the lane had room) or `parked`
        (their retry time came); with the backlog left and its deferred-again count."""
        with self._lock:
            self.redrives[reason] = self.redrives.get(reason, 0) + n
            self.backlog = backlog
            self.deferred_again = deferred_again
        if n:
            metrics.LANE_REDRIVES.labels(account=self.account, reason=reason).inc(n)

    def set_backlog(self, waiting: int, deferred_again: int) -> None:
        """Deferred decisions waiting for room now (and re-drives that found the lane full)."""
        with self._lock:
            self.backlog = waiting
            self.deferred_again = deferred_again

    def record_rejection(
        self, decision_hash: str, reasons: list[str] | tuple[str, ...], at: datetime | None = None
    ) -> None:
        with self._lock:
            clean = tuple(scrub_text(str(r)) for r in reasons)
            self.last_rejection = _Event(decision_hash, at or self.clock(), clean)
            self.rejections += 1
        for reason in clean or ("unspecified",):
            metrics.LANE_REJECTIONS.labels(account=self.account, reason=reason).inc()

    def record_error(self, kind: str, message: str, at: datetime | None = None) -> None:
        """A broker (or lane) call failed; `kind` is the error class (auth, rate_limit, ...)."""
        with self._lock:
            now = at or self.clock()
            self.last_error = _Error(kind, scrub_text(message), now)
            self.consecutive_errors += 1
            if self.errors_since is None:
                self.errors_since = now
        metrics.BROKER_ERRORS.labels(account=self.account, **{"class": kind}).inc()

    def record_ok(self, at: datetime | None = None) -> None:
        """A broker call of this lane succeeded: clears this lane's error state only."""
        with self._lock:
            self._clear_errors(at or self.clock())

    def _clear_errors(self, now: datetime) -> None:
        self.last_ok_at = now
        self.errors_since = None
        self.consecutive_errors = 0

    def set_database_unavailable(self, reason: str | None) -> None:
        """Postgres unreachable for this lane (None: reachable again); not a broker error."""
        with self._lock:
            self.database_unavailable = scrub_text(reason) if reason else None

    # ---- controls and state
    def set_flags(self, flags: Mapping[str, bool | None], available: bool) -> None:
        with self._lock:
            self.flags = dict(flags)
            self.flags_available = available

    def set_kill_switch(self, engaged: bool, reason: str | None = None) -> None:
        with self._lock:
            self.kill_switch_engaged = engaged
            self.kill_switch_reason = scrub_text(reason) if reason else None

    def set_trading_state(self, view: Mapping[str, Any]) -> None:
        with self._lock:
            self.trading_state = {
                k: scrub_text(v) if isinstance(v, str) and k == "reason" else v
                for k, v in view.items()
            }

    def set_control_action(self, view: Mapping[str, Any]) -> None:
        with self._lock:
            self.control_action = dict(view)

    def set_cursor(self, cursor: Mapping[str, object]) -> None:
        with self._lock:
            self.cursor = dict(cursor)

    def set_ledger_size(self, n: int) -> None:
        with self._lock:
            self.ledger_size = n

    def set_reconciliation(self, view: Mapping[str, Any]) -> None:
        with self._lock:
            self.reconciliation = dict(view)
            if self.reconciliation.get("last_error"):
                self.reconciliation["last_error"] = scrub_text(str(view["last_error"]))

    def set_position_drift(self, drift: Mapping[str, str]) -> None:
        with self._lock:
            self.position_drift = dict(drift)

    def set_lag(self, partitions: list[dict[str, Any]]) -> None:
        """Lag of the input partitions this worker owns for the lane (set by the monitor)."""
        with self._lock:
            self.lag = [dict(p) for p in partitions]

    # ---- health
    def problems(self, now: datetime | None = None) -> list[str]:
        """Why this lane is unhealthy; empty when healthy."""
        with self._lock:
            return self._problems(now or self.clock())

    def _problems(self, now: datetime) -> list[str]:
        if not self.enabled or self.owned is False:
            return []
        problems: list[str] = []
        if self.agent_running is False:
            problems.append("lane_agent_not_running")
        if self.down_reason:
            problems.append("lane_down")
        if not self.flags_available:
            problems.append("flags_unavailable")
        if self.database_unavailable:
            problems.append("database_unavailable")
        if self.reconciliation.get("state") == "retrying":
            problems.append("reconciliation_failed")
        if self.position_drift:
            problems.append("position_drift")
        error, grace = self.last_error, timedelta(seconds=self.error_grace_seconds)
        if self.errors_since is not None and error is not None:
            error_class = error_class_of(error.kind)
            if error_class in NON_RETRYABLE_ERROR_CLASSES:
                problems.append(f"broker_error_{error_class}")
            # A streak longer than the grace that is still going on (callers that never report
            # success, such as a reconciler, recover once errors stop for a grace period).
            elif now - self.errors_since >= grace and now - error.at < grace:
                problems.append("broker_errors_persist")
        return problems

    def healthy(self, now: datetime | None = None) -> bool:
        return not self.problems(now)

    def snapshot(self, now: datetime | None = None) -> dict[str, Any]:
        with self._lock:
            now = now or self.clock()
            problems = self._problems(now)
            return {
                "account": self.account,
                "enabled": self.enabled,
                "mode": self.mode,
                "owned": self.owned,
                "up": self.up,
                "down_reason": self.down_reason,
                "healthy": not problems,
                "problems": problems,
                "flags": dict(self.flags),
                "flags_available": self.flags_available,
                "kill_switch": {
                    "engaged": self.kill_switch_engaged,
                    "reason": self.kill_switch_reason,
                },
                "trading_state": dict(self.trading_state),
                "control_action": dict(self.control_action) if self.control_action else None,
                "last_decision": self.last_decision.as_dict() if self.last_decision else None,
                "last_submission": self.last_submission.as_dict() if self.last_submission else None,
                "last_rejection": self.last_rejection.as_dict() if self.last_rejection else None,
                "last_error": self.last_error.as_dict() if self.last_error else None,
                "last_ok_at": _iso(self.last_ok_at),
                "errors_since": _iso(self.errors_since),
                "consecutive_errors": self.consecutive_errors,
                "counts": {
                    "decisions": self.decisions_seen,
                    "submissions": self.submissions,
                    "rejections": self.rejections,
                    "deferrals": self.deferrals,
                    "redrives": dict(self.redrives),
                    "deferred_again": self.deferred_again,
                },
                "backlog": self.backlog,
                "ledger_size": self.ledger_size,
                "cursor": dict(self.cursor),
                "lag": [dict(p) for p in self.lag],
                "reconciliation": dict(self.reconciliation),
                "position_drift": dict(self.position_drift),
            }


class StatusBoard:
    """Every lane's status, keyed by account label (get-or-create)."""

    def __init__(
        self, clock: Clock = utc_now, error_grace_seconds: float = DEFAULT_ERROR_GRACE_SECONDS
    ) -> None:
        self._clock = clock
        self._grace = error_grace_seconds
        self._lanes: dict[str, LaneStatus] = {}
        self._lock = threading.Lock()

    def lane(self, account: str) -> LaneStatus:
        with self._lock:
            status = self._lanes.get(account)
            if status is None:
                status = LaneStatus(account, clock=self._clock, error_grace_seconds=self._grace)
                self._lanes[account] = status
            return status

    def set_error_grace(self, seconds: float) -> None:
        with self._lock:
            self._grace = seconds
            for status in self._lanes.values():
                status.error_grace_seconds = seconds

    def accounts(self) -> list[str]:
        with self._lock:
            return sorted(self._lanes)

    def lanes(self) -> list[LaneStatus]:
        with self._lock:
            return [self._lanes[a] for a in sorted(self._lanes)]

    def snapshot(self) -> dict[str, Any]:
        now = self._clock()
        lanes = {s.account: s.snapshot(now) for s in self.lanes()}
        unhealthy = sorted(a for a, s in lanes.items() if not s["healthy"])
        return {
            "generated_at": now.isoformat(),
            "healthy": not unhealthy,
            "unhealthy": unhealthy,
            "accounts": lanes,
        }

    def unhealthy(self) -> list[str]:
        now = self._clock()
        return [s.account for s in self.lanes() if not s.healthy(now)]

    def reset(self) -> None:
        """Forget every lane (tests)."""
        with self._lock:
            self._lanes.clear()
