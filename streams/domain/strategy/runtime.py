"""StrategyRuntime: evaluate every enabled strategy on a signal, isolated, then aggregate.

Modes (`TRADING_STRATEGY_RUNTIME_MODE`):
- `legacy`: only the legacy MACD/RSI rule runs.
- `plugin_v3`: every enabled catalogue strategy runs through its plugin.
- `scheduler_v3`: as plugin_v3 when `TRADING_STRATEGY_SCHEDULER_ENABLED`; when false the catalogue
  is still resolved and verified at start, but decisions keep coming from the legacy rule.
With `TRADING_STRATEGY_RUNTIME_FALLBACK_LEGACY` the legacy rule runs when the plugins yield nothing
(unless a legacy-type strategy already ran among them).

Isolation: a plugin that raises (or proposes nonsense) is counted as an error against its own
circuit and skipped; the others still run. Missing required features → no intent (fail closed).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from enum import Enum
from functools import lru_cache

from schemas.ta_signal import TaSignal, timeframe_from_window
from streams.domain.strategy.aggregator import IntentAggregator
from streams.domain.strategy.features import Features, extract_features
from streams.domain.strategy.model import AggregatedIntent, Intent, Proposal
from streams.domain.strategy.registry import RegisteredStrategy, StrategyRegistry
from streams.settings import RuntimeMode

_CENT = Decimal("0.01")


class Outcome(str, Enum):
    intent = "intent"
    no_intent = "no_intent"
    error = "error"
    missing_features = "missing_features"
    degraded = "degraded"


@dataclass(frozen=True)
class Evaluation:
    strategy_id: str
    outcome: Outcome
    detail: str = ""
    circuit_opened: bool = False


@dataclass(frozen=True)
class RuntimeOptions:
    mode: RuntimeMode = RuntimeMode.legacy
    scheduler_enabled: bool = True
    fallback_legacy: bool = True

    @property
    def plugins_active(self) -> bool:
        if self.mode is RuntimeMode.plugin_v3:
            return True
        return self.mode is RuntimeMode.scheduler_v3 and self.scheduler_enabled


@dataclass(frozen=True)
class RuntimeResult:
    intents: tuple[AggregatedIntent, ...]
    evaluations: tuple[Evaluation, ...]
    conflicts: int
    fallback_used: bool  # the legacy fallback produced the intents


class PluginOutputError(ValueError):
    pass


@dataclass(frozen=True)
class _Context:
    """What every strategy sees of one signal, computed once."""

    signal: TaSignal
    timeframe: str
    features: Features


@lru_cache(maxsize=256)
def _timeframe(window_size: str | None) -> str:
    """`TaSignal.timeframe`, memoised: a signal stream has a handful of window sizes."""
    return "1Sec" if window_size is None else timeframe_from_window(window_size)


def signal_timeframe(signal: TaSignal) -> str:
    return _timeframe(signal.window.size if signal.window is not None else None)


def size_intent(
    strategy: RegisteredStrategy, signal: TaSignal, timeframe: str, proposal: Proposal
) -> Intent | None:
    """Validate a plugin's proposal and turn it into a sized intent (None when sized to zero)."""
    if not 0.0 <= proposal.confidence <= 1.0:
        raise PluginOutputError(f"confidence {proposal.confidence!r} outside [0, 1]")
    if not 0.0 < proposal.size <= 1.0:
        raise PluginOutputError(f"size {proposal.size!r} outside (0, 1]")
    config = strategy.config
    notional = (config.max_notional_per_trade * Decimal(repr(proposal.size))).quantize(
        _CENT, rounding=ROUND_DOWN
    )
    if notional <= 0:
        return None
    return Intent(
        strategy_id=config.id,
        symbol=signal.symbol,
        horizon=timeframe,
        action=proposal.action,
        confidence=proposal.confidence,
        notional=notional,
        event_ts=signal.event_ts,
        max_position_pct_equity=config.max_position_pct_equity,
        reason=proposal.reason,
    )


class StrategyRuntime:
    def __init__(
        self,
        plugins: StrategyRegistry,
        legacy: StrategyRegistry,
        options: RuntimeOptions,
        aggregator: IntentAggregator | None = None,
    ) -> None:
        self.plugins = plugins
        self.legacy = legacy
        self.options = options
        self.aggregator = aggregator or IntentAggregator()

    def evaluate(self, signal: TaSignal) -> RuntimeResult:
        context = _Context(signal, signal_timeframe(signal), extract_features(signal))
        fallback_used = False
        if self.options.plugins_active:
            intents, evaluations = self._run(self.plugins, context)
            if not intents and self._fallback_applies():
                intents, legacy_evaluations = self._run(self.legacy, context)
                evaluations += legacy_evaluations
                fallback_used = bool(intents)
        else:
            intents, evaluations = self._run(self.legacy, context)
        aggregation = self.aggregator.aggregate(intents)
        return RuntimeResult(
            aggregation.intents, tuple(evaluations), aggregation.conflicts, fallback_used
        )

    def _fallback_applies(self) -> bool:
        return self.options.fallback_legacy and not self.plugins.has_enabled_legacy

    def _run(
        self, registry: StrategyRegistry, context: _Context
    ) -> tuple[list[Intent], list[Evaluation]]:
        intents: list[Intent] = []
        evaluations: list[Evaluation] = []
        for strategy in registry.enabled():  # sorted by id
            if not strategy.config.applies_to(context.signal.symbol, context.timeframe):
                continue
            intent, evaluation = self._evaluate_one(registry, strategy, context)
            evaluations.append(evaluation)
            if intent is not None:
                intents.append(intent)
        return intents, evaluations

    def _evaluate_one(
        self, registry: StrategyRegistry, strategy: RegisteredStrategy, context: _Context
    ) -> tuple[Intent | None, Evaluation]:
        signal, features = context.signal, context.features
        if registry.degraded(strategy.id, signal.event_ts):
            return None, Evaluation(strategy.id, Outcome.degraded)
        if not strategy.required_features <= features.keys():
            missing = ",".join(sorted(strategy.required_features - features.keys()))
            return None, Evaluation(strategy.id, Outcome.missing_features, missing)
        try:
            proposal = strategy.plugin.evaluate(features)
            intent = (
                size_intent(strategy, signal, context.timeframe, proposal)
                if proposal is not None
                else None
            )
        except Exception as exc:  # noqa: BLE001 - isolation: one plugin's bug must not stop others
            detail = f"{type(exc).__name__}: {exc}"[:200]
            opened = registry.circuit.record_error(strategy.id, signal.event_ts, detail)
            return None, Evaluation(strategy.id, Outcome.error, detail, circuit_opened=opened)
        registry.circuit.record_success(strategy.id)
        outcome = Outcome.intent if intent is not None else Outcome.no_intent
        return intent, Evaluation(strategy.id, outcome)
