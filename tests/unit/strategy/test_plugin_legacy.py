from __future__ import annotations

import pytest

from schemas.decision import Action
from streams.domain.strategy.plugins import LegacyMacdRsi, PluginConfigError

BASE = {"price": 100.0}


def features(macd: float, signal: float, rsi: float) -> dict[str, float]:
    return {**BASE, "macd": macd, "macd_signal": signal, "rsi14": rsi}


def test_buys_when_macd_above_signal_and_rsi_oversold() -> None:
    proposal = LegacyMacdRsi.configure({}).evaluate(features(0.3, 0.1, 30))
    assert proposal is not None and proposal.action is Action.buy


def test_sells_when_macd_below_signal_and_rsi_overbought() -> None:
    proposal = LegacyMacdRsi.configure({}).evaluate(features(0.1, 0.3, 70))
    assert proposal is not None and proposal.action is Action.sell


@pytest.mark.parametrize(
    ("macd", "signal", "rsi"),
    [(0.3, 0.1, 35.0), (0.1, 0.3, 65.0), (0.3, 0.1, 70.0), (0.1, 0.3, 30.0), (0.2, 0.2, 20.0)],
)
def test_no_opinion_outside_the_rule(macd: float, signal: float, rsi: float) -> None:
    assert LegacyMacdRsi.configure({}).evaluate(features(macd, signal, rsi)) is None


def test_thresholds_are_parameters() -> None:
    plugin = LegacyMacdRsi.configure({"buy_rsi_below": 45, "confidence": 0.7})
    proposal = plugin.evaluate(features(0.3, 0.1, 40))
    assert proposal is not None and proposal.confidence == 0.7


def test_requires_price_macd_and_rsi() -> None:
    required = LegacyMacdRsi.configure({}).required_features
    assert required == {"price", "macd", "macd_signal", "rsi14"}


def test_unknown_param_is_a_configuration_error() -> None:
    with pytest.raises(PluginConfigError, match="buy_rsi"):
        LegacyMacdRsi.configure({"buy_rsi": 30})
