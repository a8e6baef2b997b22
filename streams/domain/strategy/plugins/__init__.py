"""Built-in strategy plugins, resolved by (`strategy_type`, `version`)."""

from __future__ import annotations

from typing import Any

from streams.domain.strategy.plugins.base import PluginConfigError, StrategyPlugin
from streams.domain.strategy.plugins.legacy import LegacyMacdRsi
from streams.domain.strategy.plugins.momentum import MacdRsiMomentum
from streams.domain.strategy.plugins.vwap_reversion import VwapReversion

PluginClass = type[StrategyPlugin[Any]]

BUILTIN_PLUGINS: tuple[PluginClass, ...] = (LegacyMacdRsi, MacdRsiMomentum, VwapReversion)
LEGACY_TYPE = LegacyMacdRsi.strategy_type

__all__ = [
    "BUILTIN_PLUGINS",
    "LEGACY_TYPE",
    "LegacyMacdRsi",
    "MacdRsiMomentum",
    "PluginClass",
    "PluginConfigError",
    "StrategyPlugin",
    "VwapReversion",
]
