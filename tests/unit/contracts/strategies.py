"""Hypothesis strategies for the contract models."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from schemas.ta_signal import TaSignal

finite = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)

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
    ema=_opt(st.fixed_dictionaries({"ema12": finite, "ema26": finite})),
    rsi14=_opt(finite),
    boll=_opt(st.fixed_dictionaries({"mid": finite, "upper": finite, "lower": finite})),
    vwap=_opt(st.fixed_dictionaries({"session": finite}, optional={"w5m": finite})),
    imbalance=_opt(
        st.fixed_dictionaries(
            {
                "spread": finite,
                "bid_px": finite,
                "ask_px": finite,
                "bid_sz": finite,
                "ask_sz": finite,
            }
        )
    ),
    vol_realized=_opt(st.fixed_dictionaries({"w60s": finite})),
    version=st.integers(min_value=1, max_value=3),
)
