"""Decision hash: identity only, canonical, stable across key order and runs, unique per account."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import DecodeError, decode_decision, encode_decision, expected_decision_hash
from schemas.decision import AccountDecision, Action
from streams.domain.hashing import decision_hash
from tests.unit.contracts.strategies import labels, millis_datetimes

identities = st.fixed_dictionaries(
    {
        "account_label": labels,
        "symbol": st.sampled_from(["AAPL", "BTC/USD", "NVDA"]),
        "timeframe": st.sampled_from(["1Sec", "1Min"]),
        "event_ts": millis_datetimes,
        "action": st.sampled_from(["buy", "sell"]),
    }
)

# Computed once by hand from the definition (sha256 of sorted, compact JSON, ms UTC time):
FIXED_IDENTITY = {
    "account_label": "paper",
    "symbol": "AAPL",
    "timeframe": "1Sec",
    "event_ts": datetime(2026, 1, 5, 15, 0, 1, 250000, tzinfo=UTC),
    "action": "buy",
}
FIXED_CANONICAL = (
    '{"account_label":"paper","action":"buy","event_ts":"2026-01-05T15:00:01.250Z",'
    '"symbol":"AAPL","timeframe":"1Sec"}'
)


FIXED_HASH = "e5c04aa85857f3cc9ebfa0868d8f5f8af39165f5acca9d95c4c2c9753a0517d7"


def test_definition_matches_design() -> None:
    assert hashlib.sha256(FIXED_CANONICAL.encode()).hexdigest() == FIXED_HASH
    # A literal: the hash must never change between releases (it is the client order id).
    assert decision_hash(**FIXED_IDENTITY) == FIXED_HASH


@settings(max_examples=200, deadline=None)
@given(identity=identities, seed=st.integers())
def test_stable_across_key_order_and_runs(identity: dict[str, Any], seed: int) -> None:
    items = list(identity.items())
    random.Random(seed).shuffle(items)
    first = decision_hash(**identity)
    assert decision_hash(**dict(items)) == first
    assert decision_hash(**identity) == first
    assert len(first) == 64 and all(c in "0123456789abcdef" for c in first)


@settings(max_examples=200, deadline=None)
@given(identity=identities, other=labels)
def test_differs_per_account(identity: dict[str, Any], other: str) -> None:
    if other == identity["account_label"]:
        return
    assert decision_hash(**identity) != decision_hash(**{**identity, "account_label": other})


@settings(max_examples=200, deadline=None)
@given(identity=identities, offset_minutes=st.integers(min_value=-720, max_value=720))
def test_same_instant_in_any_timezone_gives_the_same_hash(
    identity: dict[str, Any], offset_minutes: int
) -> None:
    tz = timezone(timedelta(minutes=offset_minutes))
    moved = {**identity, "event_ts": identity["event_ts"].astimezone(tz)}
    assert decision_hash(**moved) == decision_hash(**identity)


def test_naive_time_is_utc_and_sub_millisecond_digits_are_ignored() -> None:
    naive = FIXED_IDENTITY["event_ts"].replace(tzinfo=None, microsecond=250999)
    assert decision_hash(**{**FIXED_IDENTITY, "event_ts": naive}) == decision_hash(**FIXED_IDENTITY)


def make_decision(**changes: Any) -> AccountDecision:
    fields: dict[str, Any] = {
        **FIXED_IDENTITY,
        "strategy_id": "legacy-macd-rsi",
        "notional": Decimal("1000"),
        "confidence": 0.7,
        "emitted_at": datetime(2026, 1, 5, 15, 0, 2, tzinfo=UTC),
        "telemetry": {"params": {"fast": 12}},
    }
    fields.update(changes)
    identity = {k: fields[k] for k in FIXED_IDENTITY}
    return AccountDecision.model_validate({**fields, "decision_hash": decision_hash(**identity)})


def test_sizing_telemetry_and_params_do_not_change_the_hash() -> None:
    a = make_decision()
    b = make_decision(notional=Decimal("2500.5"), confidence=0.1, telemetry={"params": {"x": 1}})
    assert a.decision_hash == b.decision_hash == expected_decision_hash(a)


def test_the_winning_strategy_does_not_change_the_hash() -> None:
    """A signal re-evaluated with another circuit-breaker state or the legacy fallback can win
    with another strategy: it must still be the same decision (the same client order id)."""
    a = make_decision(strategy_id="macd-rsi-momentum", source_strategy_ids=("macd-rsi-momentum",))
    b = make_decision(strategy_id="legacy-macd-rsi", source_strategy_ids=())
    assert a.decision_hash == b.decision_hash == expected_decision_hash(b)
    assert make_decision(action="sell").decision_hash != a.decision_hash


def test_decision_round_trip_is_compact_json() -> None:
    d = make_decision(price=Decimal("187.42"), source_strategy_ids=("a", "b"))
    raw = encode_decision(d)
    assert b", " not in raw and b'"notional":"1000"' in raw and b'"action":"buy"' in raw
    assert decode_decision(raw) == d


def test_decoding_a_decision_with_a_foreign_hash_is_refused() -> None:
    d = make_decision()
    forged = d.model_copy(update={"decision_hash": "0" * 64})
    with pytest.raises(DecodeError) as caught:
        decode_decision(encode_decision(forged))
    assert caught.value.reason == "decision_hash_mismatch"
    assert decode_decision(encode_decision(forged), verify_hash=False) == forged


@pytest.mark.parametrize("label", ["", "Paper", "a:b", "*", "a b", "x" * 65])
def test_decision_account_label_is_validated(label: str) -> None:
    with pytest.raises(ValueError, match="account label"):
        make_decision(account_label=label)


def test_action_enum_and_plain_string_hash_alike() -> None:
    assert decision_hash(**{**FIXED_IDENTITY, "action": Action.buy}) == decision_hash(
        **FIXED_IDENTITY
    )
    assert json.loads(FIXED_CANONICAL)["action"] == "buy"
