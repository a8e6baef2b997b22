from __future__ import annotations

import pytest

from schemas.decision import Action
from streams.domain.strategy.plugins import PluginConfigError, VwapReversion


def features(price: float, rsi: float, **extra: float) -> dict[str, float]:
    return {"price": price, "last_price": price, "vwap_session": 100.0, "rsi14": rsi, **extra}


def test_buys_a_price_stretched_below_vwap_when_oversold() -> None:
    proposal = VwapReversion.configure({}).evaluate(features(99.7, rsi=35))  # -30 bps
    assert proposal is not None
    assert proposal.action is Action.buy
    # 30 bps is a third of the way from entry (15) to full (60): 0.5 + 0.35 / 3
    assert proposal.confidence == pytest.approx(0.6167)


def test_sells_a_price_stretched_above_vwap_when_overbought() -> None:
    proposal = VwapReversion.configure({}).evaluate(features(100.7, rsi=66))  # +70 bps
    assert proposal is not None
    assert proposal.action is Action.sell
    assert proposal.confidence == 0.85


@pytest.mark.parametrize(
    ("price", "rsi"),
    [
        (99.9, 20.0),  # -10 bps: inside the entry band
        (99.7, 50.0),  # stretched but RSI not oversold
        (100.3, 50.0),  # stretched up but RSI not overbought
        (95.0, 20.0),  # -500 bps: regime break or bad data, not a reversion
    ],
)
def test_no_trade_without_a_confirmed_stretch(price: float, rsi: float) -> None:
    assert VwapReversion.configure({}).evaluate(features(price, rsi)) is None


def test_wide_spread_blocks_the_trade() -> None:
    plugin = VwapReversion.configure({"max_spread_bps": 10})
    assert plugin.evaluate(features(99.7, rsi=35, spread=0.05)) is not None  # 5 bps
    assert plugin.evaluate(features(99.7, rsi=35, spread=0.20)) is None  # 20 bps


def test_five_minute_anchor() -> None:
    plugin = VwapReversion.configure({"anchor": "w5m"})
    assert "vwap_w5m" in plugin.required_features
    stretched = {**features(99.7, rsi=35), "vwap_w5m": 100.0, "vwap_session": 99.7}
    proposal = plugin.evaluate(stretched)
    assert proposal is not None and proposal.action is Action.buy


def test_band_confirmation() -> None:
    plugin = VwapReversion.configure({"require_band": True})
    assert {"boll_lower", "boll_upper"} <= plugin.required_features
    inside = features(99.7, rsi=35, boll_lower=99.5, boll_upper=100.5)
    outside = features(99.7, rsi=35, boll_lower=99.8, boll_upper=100.5)
    assert plugin.evaluate(inside) is None
    assert plugin.evaluate(outside) is not None


def test_entry_must_be_below_max_deviation() -> None:
    with pytest.raises(PluginConfigError, match="entry_bps"):
        VwapReversion.configure({"entry_bps": 400})
