"""The strategy catalogue: `TRADING_STRATEGIES_JSON` or `TRADING_STRATEGIES_FILE`, else defaults.

A document is a list of strategy entries or `{"strategies": [...]}` (JSON or YAML). Each entry:
`id, type (or strategy_type), version, enabled, base_timeframe, universe_symbols,
max_notional_per_trade, max_position_pct_equity, params`. Errors name the entry and stop the
worker at start.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import yaml
from pydantic import ValidationError

from streams.domain.strategy.model import StrategyConfig
from streams.domain.strategy.plugins import LEGACY_TYPE, MacdRsiMomentum, VwapReversion
from streams.domain.strategy.plugins.base import describe
from streams.domain.strategy.registry import StrategyConfigError, StrategyRegistry
from streams.domain.strategy.runtime import RuntimeOptions, StrategyRuntime
from streams.settings import Settings

LEGACY_STRATEGY_ID = "legacy-macd-rsi"
DEFAULT_MAX_NOTIONAL = Decimal("1000")


def _default_notional(settings: Settings) -> Decimal:
    return min(DEFAULT_MAX_NOTIONAL, Decimal(repr(settings.max_notional_per_order)))


def default_catalog(settings: Settings) -> list[StrategyConfig]:
    """Momentum and VWAP reversion on 1-second signals, every symbol, modest size."""
    common: dict[str, Any] = {
        "base_timeframe": "1Sec",
        "max_notional_per_trade": _default_notional(settings),
        "max_position_pct_equity": settings.max_position_pct_equity,
    }
    return [
        StrategyConfig(
            id="macd-rsi-momentum", strategy_type=MacdRsiMomentum.strategy_type, **common
        ),
        StrategyConfig(id="vwap-reversion", strategy_type=VwapReversion.strategy_type, **common),
    ]


def builtin_legacy(settings: Settings) -> StrategyConfig:
    return StrategyConfig(
        id=LEGACY_STRATEGY_ID,
        strategy_type=LEGACY_TYPE,
        base_timeframe="1Sec",
        max_notional_per_trade=_default_notional(settings),
        max_position_pct_equity=settings.max_position_pct_equity,
    )


def parse_catalog(text: str, source: str) -> list[StrategyConfig]:
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise StrategyConfigError(f"{source}: not valid JSON/YAML: {exc}") from None
    entries = document.get("strategies") if isinstance(document, dict) else document
    if not isinstance(entries, list):
        raise StrategyConfigError(f"{source}: expected a list of strategies")
    return [_parse_entry(entry, index, source) for index, entry in enumerate(entries)]


def _parse_entry(entry: Any, index: int, source: str) -> StrategyConfig:
    name = entry.get("id", f"#{index}") if isinstance(entry, dict) else f"#{index}"
    try:
        return StrategyConfig.model_validate(entry)
    except ValidationError as exc:
        raise StrategyConfigError(f"{source}: strategy {name!r}: {describe(exc)}") from None


def load_catalog(settings: Settings) -> list[StrategyConfig]:
    if settings.strategies_json and settings.strategies_file:
        raise StrategyConfigError(
            "set only one of TRADING_STRATEGIES_JSON and TRADING_STRATEGIES_FILE"
        )
    if settings.strategies_json:
        return parse_catalog(settings.strategies_json, "TRADING_STRATEGIES_JSON")
    if settings.strategies_file:
        try:
            text = settings.strategies_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise StrategyConfigError(
                f"TRADING_STRATEGIES_FILE {settings.strategies_file}: {exc.strerror or exc}"
            ) from None
        return parse_catalog(text, str(settings.strategies_file))
    return default_catalog(settings)


def legacy_configs(catalog: list[StrategyConfig], settings: Settings) -> list[StrategyConfig]:
    """The catalogue's enabled legacy-type strategies, else the built-in legacy rule."""
    configured = [c for c in catalog if c.strategy_type == LEGACY_TYPE and c.enabled]
    return configured or [builtin_legacy(settings)]


def build_runtime(
    settings: Settings, catalog: list[StrategyConfig] | None = None
) -> StrategyRuntime:
    """Resolve and verify the catalogue (always, whatever the mode) and build the runtime."""
    configs = load_catalog(settings) if catalog is None else catalog
    options = RuntimeOptions(
        mode=settings.strategy_runtime_mode,
        scheduler_enabled=settings.strategy_scheduler_enabled,
        fallback_legacy=settings.strategy_runtime_fallback_legacy,
    )
    return StrategyRuntime(
        build_registry(settings, configs),
        build_registry(settings, legacy_configs(configs, settings)),
        options,
    )


def build_registry(settings: Settings, configs: list[StrategyConfig]) -> StrategyRegistry:
    return StrategyRegistry(
        configs,
        circuit_errors=settings.strategy_circuit_errors,
        circuit_cooldown=timedelta(seconds=settings.strategy_circuit_cooldown_seconds),
    )
