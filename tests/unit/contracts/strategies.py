"""Hypothesis strategies for the contract models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from schemas.ta_signal import TaSignal

finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)
# Prices, sizes and volatilities (negative has no meaning: `TaSignal.number_problems`).
non_negative = st.floats(
    allow_nan=False, allow_infinity=False, width=64, min_value=0, max_value=1e12
)
rsi = st.floats(allow_nan=False, min_value=0, max_value=100)

# Signals travel with millisecond timestamps (Avro strings, ClickHouse DateTime64(3)).
millis_datetimes = st.integers(min_value=0, max_value=4_000_000_000_000).map(
    lambda ms: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)

labels = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,20}", fullmatch=True)


def _opt(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


ta_signals: st.SearchStrategy[TaSignal] = st.builds(
    lambda **kw: TaSignal.model_validate(kw),
    ingest_ts=millis_datetimes,
    event_ts=millis_datetimes,
    symbol=st.sampled_from(["AAPL", "NVDA", "BTC/USD", "ETH/USD", "SPY"]),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    is_final=_opt(st.booleans()),
    source=_opt(st.text(max_size=10)),
    window=_opt(
        st.fixed_dictionaries(
            {"size": st.sampled_from(["PT1S", "PT5S", "PT1M"])},
            optional={"step": st.just("PT1S"), "start": st.text(max_size=5)},
        )
    ),
    macd=_opt(st.fixed_dictionaries({"macd": finite, "signal": finite, "hist": finite})),
    ema=_opt(st.fixed_dictionaries({"ema12": non_negative, "ema26": non_negative})),
    rsi14=_opt(rsi),
    boll=_opt(
        st.fixed_dictionaries({"mid": non_negative, "upper": non_negative, "lower": non_negative})
    ),
    vwap=_opt(st.fixed_dictionaries({"session": non_negative}, optional={"w5m": non_negative})),
    imbalance=_opt(
        st.fixed_dictionaries(
            {
                "spread": finite,
                "bid_px": non_negative,
                "ask_px": non_negative,
                "bid_sz": non_negative,
                "ask_sz": non_negative,
            }
        )
    ),
    vol_realized=_opt(st.fixed_dictionaries({"w60s": non_negative})),
    version=st.integers(min_value=1, max_value=3),
)
