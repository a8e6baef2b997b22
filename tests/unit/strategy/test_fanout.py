from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from schemas.codecs import decode_decision, encode_decision
from schemas.decision import Action
from streams.domain.fanout import fan_out, receiving_lanes
from streams.domain.hashing import decision_hash
from streams.domain.strategy.model import AggregatedIntent
from streams.flags.core import (
    GLOBAL_ENTITY,
    KILL_SWITCH,
    MULTI_ACCOUNT_ENABLED,
    TRADING_ENABLED,
    EntityFlags,
    FlagSnapshot,
    lane_entity,
)
from streams.flags.static import evaluate_static
from tests.unit.strategy.fixtures import T0, make_signal

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
DEFAULTS = {TRADING_ENABLED: True, MULTI_ACCOUNT_ENABLED: True, KILL_SWITCH: False}


@dataclass(frozen=True)
class Acct:
    label: str
    enabled: bool = True


ACCOUNTS = [Acct("paper"), Acct("acct-b"), Acct("acct-c", enabled=False)]


def flags(overrides: dict[str, dict[str, bool]] | None = None, **global_: bool) -> FlagSnapshot:
    entities = [GLOBAL_ENTITY, *(lane_entity(a.label) for a in ACCOUNTS)]
    return FlagSnapshot(evaluate_static(entities, {**DEFAULTS, **global_}, overrides or {}))


def test_every_enabled_account_receives_in_label_order() -> None:
    assert receiving_lanes(ACCOUNTS, flags(), "paper") == ("acct-b", "paper")


def test_a_lane_disabled_by_its_flag_gets_nothing_and_others_are_unaffected() -> None:
    off = {lane_entity("acct-b"): {TRADING_ENABLED: False}}
    assert receiving_lanes(ACCOUNTS, flags(off), "paper") == ("paper",)


def test_global_trading_flag_off_stops_every_lane() -> None:
    assert receiving_lanes(ACCOUNTS, flags(**{TRADING_ENABLED: False}), "paper") == ()


def test_multi_account_flag_gates_secondary_accounts_only() -> None:
    snapshot = flags(**{MULTI_ACCOUNT_ENABLED: False})
    assert receiving_lanes(ACCOUNTS, snapshot, "paper") == ("paper",)


def test_lane_flags_cannot_override_a_global_off() -> None:
    canary = {lane_entity("acct-b"): {MULTI_ACCOUNT_ENABLED: True}}
    snapshot = flags(canary, **{MULTI_ACCOUNT_ENABLED: False})
    assert receiving_lanes(ACCOUNTS, snapshot, "paper") == ("paper",)


def test_kill_switch_does_not_stop_fan_out() -> None:
    """The lane rejects with kill_switch_enabled itself, so the rejection is recorded."""
    killed = {lane_entity("acct-b"): {KILL_SWITCH: True}}
    assert receiving_lanes(ACCOUNTS, flags(killed), "paper") == ("acct-b", "paper")


def test_lane_with_unavailable_flags_still_receives_to_fail_safe_itself() -> None:
    snapshot = flags()
    broken = dict(snapshot.entities)
    broken[lane_entity("acct-b")] = EntityFlags(lane_entity("acct-b"), error="timeout")
    assert receiving_lanes(ACCOUNTS, FlagSnapshot(broken), "paper") == ("acct-b", "paper")


def aggregated(strategy_id: str = "mom", action: Action = Action.buy) -> AggregatedIntent:
    return AggregatedIntent(
        symbol="AAPL",
        horizon="1Sec",
        action=action,
        confidence=0.75,
        notional=Decimal("250.00"),
        strategy_id=strategy_id,
        source_strategy_ids=(strategy_id, "vwap"),
        event_ts=T0,
        max_position_pct_equity=0.2,
        conflict=True,
        reason="why",
    )


def test_one_decision_per_intent_and_lane_with_the_account_in_the_hash() -> None:
    signal = make_signal(seq=7, at=T0, price=101.25)
    decisions = fan_out([aggregated()], ("paper", "acct-b"), signal, NOW, {"runtime_mode": "x"})
    assert [d.account_label for d in decisions] == ["acct-b", "paper"]
    a, b = decisions
    assert a.decision_hash != b.decision_hash
    assert b.decision_hash == decision_hash(
        account_label="paper",
        symbol="AAPL",
        timeframe="1Sec",
        event_ts=T0,
        action="buy",
    )
    assert b.source_strategy_ids == ("mom", "vwap")
    assert b.notional == Decimal("250.00") and b.price == Decimal("101.25")
    assert b.signal_seq == 7 and b.emitted_at == NOW
    assert b.telemetry == {"runtime_mode": "x", "conflict": True, "reason": "why"}
    assert decode_decision(encode_decision(b)) == b  # the hash verifies on the wire


def test_hash_ignores_sizing_and_emission_time() -> None:
    signal = make_signal(seq=7, at=T0)
    first = fan_out([aggregated()], ("paper",), signal, NOW)[0]
    resized = replace(aggregated(), notional=Decimal("9"), confidence=0.1)
    second = fan_out([resized], ("paper",), signal, datetime.now(UTC))[0]
    assert first.decision_hash == second.decision_hash


def test_no_lanes_no_decisions() -> None:
    assert fan_out([aggregated()], (), make_signal(), NOW) == []
