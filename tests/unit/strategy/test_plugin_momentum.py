from __future__ import annotations

import pytest

from schemas.decision import Action
from streams.domain.strategy.plugins import MacdRsiMomentum, PluginConfigError


def features(
    gap: float, rsi: float = 60.0, ema: tuple[float, float] = (101.0, 100.0)
) -> dict[str, float]:
    """MACD gap in price units at price 100 (so 0.01 = 1 bp)."""
    return {
        "price": 100.0,
        "macd": 0.2 + gap,
        "macd_signal": 0.2,
        "rsi14": rsi,
        "ema12": ema[0],
        "ema26": ema[1],
    }


def test_buys_a_bullish_cross_in_the_momentum_band() -> None:
    proposal = MacdRsiMomentum.configure({}).evaluate(features(0.10, rsi=60))
    assert proposal is not None
    assert proposal.action is Action.buy
    assert proposal.confidence == 0.9  # 10 bps >= full_hist_bps (5)


def test_sells_a_bearish_cross_in_a_downtrend() -> None:
    proposal = MacdRsiMomentum.configure({}).evaluate(features(-0.10, rsi=40, ema=(99.0, 100.0)))
    assert proposal is not None and proposal.action is Action.sell


def test_confidence_grows_with_the_gap() -> None:
    plugin = MacdRsiMomentum.configure({})
    # 2.75 bps is halfway between min (0.5) and full (5.0): 0.5 + 0.4 * 0.5
    proposal = plugin.evaluate(features(0.0275))
    assert proposal is not None and proposal.confidence == pytest.approx(0.7)
    assert proposal.size == 1.0


@pytest.mark.parametrize(
    ("gap", "rsi", "ema"),
    [
        (0.004, 60.0, (101.0, 100.0)),  # gap below min_hist_bps
        (0.10, 75.0, (101.0, 100.0)),  # overbought: not momentum any more
        (0.10, 45.0, (101.0, 100.0)),  # RSI not confirming strength
        (0.10, 60.0, (99.0, 100.0)),  # against the EMA trend
        (-0.10, 40.0, (101.0, 100.0)),  # sell against an uptrend
    ],
)
def test_no_trade_without_confirmation(gap: float, rsi: float, ema: tuple[float, float]) -> None:
    assert MacdRsiMomentum.configure({}).evaluate(features(gap, rsi, ema)) is None


def test_trend_filter_can_be_switched_off() -> None:
    plugin = MacdRsiMomentum.configure({"require_trend": False})
    assert "ema12" not in plugin.required_features
    without_ema = {k: v for k, v in features(0.10).items() if not k.startswith("ema")}
    proposal = plugin.evaluate(without_ema)
    assert proposal is not None and proposal.action is Action.buy


def test_size_may_follow_confidence() -> None:
    plugin = MacdRsiMomentum.configure({"size_with_confidence": True})
    proposal = plugin.evaluate(features(0.0275))
    assert proposal is not None and proposal.size == proposal.confidence


def test_gap_is_relative_to_price() -> None:
    """The same MACD gap means less on a pricier symbol."""
    plugin = MacdRsiMomentum.configure({"min_hist_bps": 2.0})
    cheap = {**features(0.05), "price": 100.0}  # 5 bps
    dear = {**features(0.05), "price": 1000.0}  # 0.5 bps
    assert plugin.evaluate(cheap) is not None
    assert plugin.evaluate(dear) is None


def test_inverted_rsi_band_is_rejected() -> None:
    with pytest.raises(PluginConfigError, match="RSI bands"):
        MacdRsiMomentum.configure({"rsi_buy_min": 80, "rsi_buy_max": 70})
