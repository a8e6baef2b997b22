"""Signal pipeline: one decoded, in-order TA signal → strategy runtime → account decisions.

The application service between the `signals` agent (Kafka I/O) and the pure domain core
(strategy runtime, fan-out). It owns the strategy and decision metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge

from schemas.decision import AccountDecision
from schemas.ta_signal import TaSignal
from streams.domain.fanout import AccountLike, fan_out, receiving_lanes
from streams.domain.replay import ReplayScope, replay_lanes
from streams.domain.signal_order import SignalOrder
from streams.domain.strategy.catalog import build_runtime
from streams.domain.strategy.registry import StrategyRegistry
from streams.domain.strategy.runtime import Outcome, RuntimeResult, StrategyRuntime
from streams.flags.core import FlagSnapshot
from streams.settings import Settings

log = logging.getLogger(__name__)

STRATEGY_EVALUATIONS = Counter(
    "torghut_strategy_evaluations_total", "Strategy plugin evaluations.", ["strategy"]
)
STRATEGY_ERRORS = Counter(
    "torghut_strategy_errors_total", "Strategy plugin errors (isolated).", ["strategy"]
)
STRATEGY_DEGRADED = Gauge(
    "torghut_strategy_degraded", "1 while the strategy's circuit breaker is open.", ["strategy"]
)
STRATEGY_MISSING_FEATURES = Counter(
    "torghut_strategy_missing_features_total",
    "Signals a strategy skipped for missing required features (fail closed).",
    ["strategy"],
)
INTENT_CONFLICTS = Counter(
    "torghut_intent_conflict_total", "(symbol, horizon) groups with buy and sell intents."
)
LEGACY_FALLBACKS = Counter(
    "torghut_strategy_legacy_fallback_total",
    "Signals whose intents came from the legacy fallback (plugins yielded nothing).",
)
DECISIONS_EMITTED = Counter(
    "torghut_decisions_emitted_total", "Account decisions produced.", ["account"]
)
SIGNALS_DROPPED = Counter(
    "torghut_signals_dropped_total", "TA signals dropped before the runtime.", ["reason"]
)

_EVALUATED = frozenset({Outcome.intent, Outcome.no_intent, Outcome.error})


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SignalPipeline:
    def __init__(
        self,
        runtime: StrategyRuntime,
        accounts: Sequence[AccountLike],
        flags: Callable[[], FlagSnapshot],
        primary_label: str,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.runtime = runtime
        self.accounts = tuple(accounts)
        self._flags = flags
        self._primary = primary_label
        self._clock = clock
        self._telemetry = {"runtime_mode": runtime.options.mode.value}
        self._published_open: dict[int, frozenset[str]] = {}
        self._children: dict[tuple[int, str], Any] = {}

    def _child(self, metric: Counter, label: str) -> Any:
        """The metric's child for one strategy (`labels()` is too slow for every signal)."""
        key = (id(metric), label)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(strategy=label)
        return child

    def process(self, signal: TaSignal, replay: ReplayScope | None = None) -> list[AccountDecision]:
        """Decisions for every receiving lane; an empty list when no strategy wants to trade.

        A replayed signal (`replay`, from the record's headers) reaches only the receiving lanes
        that are its replay's enabled paper accounts, and says so in `telemetry.replay_id`.
        """
        result = self.runtime.evaluate(signal)
        self._record(result)
        if not result.intents:
            return []
        lanes = receiving_lanes(self.accounts, self._flags(), self._primary)
        telemetry: dict[str, Any] = {**self._telemetry, "fallback": result.fallback_used}
        if replay is not None:
            lanes = replay_lanes(lanes, replay, self.accounts)
            telemetry["replay_id"] = replay.replay_id
        return fan_out(result.intents, lanes, signal, self._clock(), telemetry)

    def _record(self, result: RuntimeResult) -> None:
        for evaluation in result.evaluations:
            sid = evaluation.strategy_id
            if evaluation.outcome in _EVALUATED:
                self._child(STRATEGY_EVALUATIONS, sid).inc()
            if evaluation.outcome is Outcome.error:
                self._child(STRATEGY_ERRORS, sid).inc()
                log.warning(
                    "strategy %s failed: %s",
                    sid,
                    evaluation.detail,
                    extra={"strategy": sid, "circuit_opened": evaluation.circuit_opened},
                )
            elif evaluation.outcome is Outcome.missing_features:
                self._child(STRATEGY_MISSING_FEATURES, sid).inc()
        if result.conflicts:
            INTENT_CONFLICTS.inc(result.conflicts)
        if result.fallback_used:
            LEGACY_FALLBACKS.inc()
        self._publish_degraded()

    def _publish_degraded(self) -> None:
        """Update the degraded gauges when a circuit opened or closed (not on every signal)."""
        for registry in self._registries():
            open_now = registry.circuit.open_keys
            before = self._published_open.get(id(registry))
            if before == open_now:
                continue
            self._published_open[id(registry)] = open_now
            for strategy in registry.strategies:
                STRATEGY_DEGRADED.labels(strategy=strategy.id).set(strategy.id in open_now)
            for sid in sorted(open_now ^ (before or frozenset())):
                state = "degraded" if sid in open_now else "restored"
                log.warning("strategy %s %s", sid, state, extra={"strategy": sid})

    def _registries(self) -> tuple[StrategyRegistry, ...]:
        return (self.runtime.plugins, self.runtime.legacy)

    @staticmethod
    def record_emitted(decisions: Sequence[AccountDecision]) -> None:
        for decision in decisions:
            DECISIONS_EMITTED.labels(account=decision.account_label).inc()

    @staticmethod
    def record_dropped(order: SignalOrder) -> None:
        SIGNALS_DROPPED.labels(reason=order.value).inc()

    def status(self) -> dict[str, Any]:
        """JSON-able runtime state: mode, strategies and their circuit state."""
        options = self.runtime.options
        return {
            "mode": options.mode.value,
            "plugins_active": options.plugins_active,
            "fallback_legacy": options.fallback_legacy,
            "strategies": [s.as_dict() for s in self.runtime.plugins.status()],
            "legacy": [s.as_dict() for s in self.runtime.legacy.status()],
        }


def build_pipeline(
    settings: Settings, accounts: Sequence[AccountLike], flags: Callable[[], FlagSnapshot]
) -> SignalPipeline:
    return SignalPipeline(build_runtime(settings), accounts, flags, settings.account_label)


def log_pipeline(pipeline: SignalPipeline) -> None:
    status = pipeline.status()
    log.info(
        "strategy runtime %s (plugins %s): strategies %s; lanes %s",
        status["mode"],
        "active" if status["plugins_active"] else "dark",
        [s["id"] for s in status["strategies"] if s["enabled"]],
        [a.label for a in pipeline.accounts] or "none enabled",
        extra={"runtime_mode": status["mode"], "plugins_active": status["plugins_active"]},
    )
