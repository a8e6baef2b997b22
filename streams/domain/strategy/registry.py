"""StrategyRegistry: resolves each configured strategy to its plugin and tracks its circuit state.

Configuration is verified when the registry is built: an unknown (type, version), bad params or a
duplicate id raise `StrategyConfigError` naming the entry, so a bad catalogue stops the worker at
start instead of silently trading without a strategy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from streams.domain.strategy.circuit import CircuitBreaker
from streams.domain.strategy.model import StrategyConfig
from streams.domain.strategy.plugins import (
    BUILTIN_PLUGINS,
    LEGACY_TYPE,
    PluginClass,
    PluginConfigError,
    StrategyPlugin,
)


class StrategyConfigError(ValueError):
    pass


@dataclass(frozen=True)
class RegisteredStrategy:
    config: StrategyConfig
    plugin: StrategyPlugin[Any]
    required_features: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        # Computed once: the hot path checks it on every signal.
        object.__setattr__(self, "required_features", self.plugin.required_features)

    @property
    def id(self) -> str:
        return self.config.id


@dataclass(frozen=True)
class StrategyStatus:
    id: str
    strategy_type: str
    version: str
    enabled: bool
    degraded: bool
    degraded_until: datetime | None
    consecutive_errors: int
    total_errors: int
    last_error: str | None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "strategy_type": self.strategy_type,
            "version": self.version,
            "enabled": self.enabled,
            "degraded": self.degraded,
            "degraded_until": self.degraded_until.isoformat() if self.degraded_until else None,
            "consecutive_errors": self.consecutive_errors,
            "total_errors": self.total_errors,
            "last_error": self.last_error,
        }


def plugin_index(plugins: Iterable[PluginClass]) -> dict[tuple[str, str], PluginClass]:
    return {(p.strategy_type, p.version): p for p in plugins}


class StrategyRegistry:
    def __init__(
        self,
        configs: Sequence[StrategyConfig],
        *,
        plugins: Iterable[PluginClass] = BUILTIN_PLUGINS,
        circuit_errors: int = 3,
        circuit_cooldown: timedelta = timedelta(seconds=300),
    ) -> None:
        self._plugins = plugin_index(plugins)
        self._strategies = tuple(sorted(self._resolve_all(configs), key=lambda s: s.id))
        self._enabled = tuple(s for s in self._strategies if s.config.enabled)
        self.has_enabled_legacy = any(s.config.strategy_type == LEGACY_TYPE for s in self._enabled)
        self.circuit = CircuitBreaker(circuit_errors, circuit_cooldown)

    def _resolve_all(self, configs: Sequence[StrategyConfig]) -> list[RegisteredStrategy]:
        seen: set[str] = set()
        resolved = []
        for config in configs:
            if config.id in seen:
                raise StrategyConfigError(f"strategy {config.id!r}: duplicate id")
            seen.add(config.id)
            resolved.append(RegisteredStrategy(config, self._configure(config)))
        return resolved

    def resolve(self, strategy_type: str, version: str) -> PluginClass:
        plugin = self._plugins.get((strategy_type, version))
        if plugin is None:
            known = ", ".join(f"{t}@{v}" for t, v in sorted(self._plugins))
            raise StrategyConfigError(f"no plugin {strategy_type}@{version} (known: {known})")
        return plugin

    def _configure(self, config: StrategyConfig) -> StrategyPlugin[Any]:
        try:
            return self.resolve(config.strategy_type, config.version).configure(config.params)
        except (StrategyConfigError, PluginConfigError) as exc:
            raise StrategyConfigError(f"strategy {config.id!r}: {exc}") from None

    @property
    def strategies(self) -> tuple[RegisteredStrategy, ...]:
        """Every configured strategy, sorted by id."""
        return self._strategies

    def enabled(self) -> tuple[RegisteredStrategy, ...]:
        return self._enabled

    def degraded(self, strategy_id: str, at: datetime) -> bool:
        return self.circuit.is_open(strategy_id, at)

    def status(self) -> tuple[StrategyStatus, ...]:
        """Circuit state as last observed (degraded until the recorded event time)."""
        return tuple(self._status(s) for s in self._strategies)

    def _status(self, strategy: RegisteredStrategy) -> StrategyStatus:
        state = self.circuit.state(strategy.id)
        return StrategyStatus(
            id=strategy.id,
            strategy_type=strategy.config.strategy_type,
            version=strategy.config.version,
            enabled=strategy.config.enabled,
            degraded=state.open_until is not None,
            degraded_until=state.open_until,
            consecutive_errors=state.consecutive_errors,
            total_errors=state.total_errors,
            last_error=state.last_error,
        )
