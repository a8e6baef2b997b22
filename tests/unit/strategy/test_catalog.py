from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from streams.domain.strategy.catalog import (
    LEGACY_STRATEGY_ID,
    build_runtime,
    default_catalog,
    legacy_configs,
    load_catalog,
    parse_catalog,
)
from streams.domain.strategy.registry import StrategyConfigError
from streams.settings import RuntimeMode, Settings


def settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def test_default_catalogue_has_momentum_and_vwap_reversion() -> None:
    catalog = default_catalog(settings(TRADING_MAX_NOTIONAL_PER_ORDER="500"))
    assert [c.strategy_type for c in catalog] == ["macd_rsi_momentum", "vwap_reversion"]
    assert all(c.max_notional_per_trade == Decimal("500") for c in catalog)
    assert all(c.enabled and c.base_timeframe == "1Sec" for c in catalog)


def test_json_catalogue_with_every_field() -> None:
    text = """{"strategies": [{"id": "mom-aapl", "type": "macd_rsi_momentum", "version": 1,
      "enabled": true, "base_timeframe": "1Min", "universe_symbols": ["AAPL", "MSFT"],
      "max_notional_per_trade": "250.50", "max_position_pct_equity": 0.1,
      "params": {"min_hist_bps": 1.5}}]}"""
    (entry,) = load_catalog(settings(TRADING_STRATEGIES_JSON=text))
    assert entry.id == "mom-aapl" and entry.version == "1"
    assert entry.universe_symbols == ("AAPL", "MSFT")
    assert entry.max_notional_per_trade == Decimal("250.50")
    assert entry.params == {"min_hist_bps": 1.5}


def test_yaml_file_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "strategies.yaml"
    path.write_text(
        "- id: vwap\n  strategy_type: vwap_reversion\n  universe: [SPY]\n"
        "- id: legacy\n  type: legacy_macd_rsi\n  enabled: false\n"
    )
    catalog = load_catalog(settings(TRADING_STRATEGIES_FILE=str(path)))
    assert [(c.id, c.enabled) for c in catalog] == [("vwap", True), ("legacy", False)]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid"),
        ('{"strategies": 3}', "expected a list"),
        ('[{"id": "a", "type": "vwap_reversion", "max_notional_per_trade": 0}]', "'a'.*greater"),
        ('[{"id": "b", "type": "vwap_reversion", "colour": "red"}]', "'b'.*colour"),
        ('[{"type": "vwap_reversion"}]', "'#0'.*id"),
    ],
)
def test_bad_catalogues_name_the_problem(text: str, match: str) -> None:
    with pytest.raises(StrategyConfigError, match=match):
        parse_catalog(text, "TRADING_STRATEGIES_JSON")


def test_file_and_json_together_are_ambiguous(tmp_path: Path) -> None:
    with pytest.raises(StrategyConfigError, match="only one"):
        load_catalog(
            settings(TRADING_STRATEGIES_JSON="[]", TRADING_STRATEGIES_FILE=str(tmp_path / "x"))
        )


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StrategyConfigError, match="TRADING_STRATEGIES_FILE"):
        load_catalog(settings(TRADING_STRATEGIES_FILE=str(tmp_path / "absent.yaml")))


def test_legacy_set_prefers_configured_legacy_strategies() -> None:
    s = settings()
    builtin = legacy_configs(default_catalog(s), s)
    assert [c.id for c in builtin] == [LEGACY_STRATEGY_ID]
    custom = parse_catalog('[{"id": "old-rule", "type": "legacy_macd_rsi"}]', "x")
    assert [c.id for c in legacy_configs(custom, s)] == ["old-rule"]


def test_runtime_takes_its_mode_and_circuit_from_settings() -> None:
    rt = build_runtime(
        settings(
            TRADING_STRATEGY_RUNTIME_MODE="scheduler_v3",
            TRADING_STRATEGY_SCHEDULER_ENABLED="false",
            TRADING_STRATEGY_RUNTIME_CIRCUIT_ERRORS="5",
            TRADING_STRATEGY_RUNTIME_CIRCUIT_COOLDOWN_SECONDS="60",
        )
    )
    assert rt.options.mode is RuntimeMode.scheduler_v3
    assert not rt.options.plugins_active
    assert rt.plugins.circuit.max_errors == 5
    assert rt.plugins.circuit.cooldown.total_seconds() == 60
