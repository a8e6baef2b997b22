from __future__ import annotations

from streams.flags.core import (
    ALL_KEYS,
    CRYPTO_ENABLED,
    GLOBAL_ENTITY,
    KILL_SWITCH,
    TRADING_ENABLED,
    EntityFlags,
    FlagSnapshot,
    lane_entity,
)

LANE = lane_entity("acct-a")


def snapshot(global_: dict[str, bool], lane: dict[str, bool] | None = None) -> FlagSnapshot:
    entities = {GLOBAL_ENTITY: EntityFlags(GLOBAL_ENTITY, global_)}
    if lane is not None:
        entities[LANE] = EntityFlags(LANE, lane)
    return FlagSnapshot(entities)


def test_lane_entity_id() -> None:
    assert lane_entity("paper") == "torghut:paper"


def test_enablers_need_both_global_and_lane() -> None:
    s = snapshot({TRADING_ENABLED: True}, {TRADING_ENABLED: False})
    assert s.is_on(TRADING_ENABLED) is True
    assert s.is_on(TRADING_ENABLED, "acct-a") is False
    assert not s.lane_enabled("acct-a")
    off_globally = snapshot({TRADING_ENABLED: False}, {TRADING_ENABLED: True})
    assert not off_globally.lane_enabled("acct-a")


def test_kill_switch_engages_from_either_entity() -> None:
    assert snapshot({KILL_SWITCH: False}, {KILL_SWITCH: True}).is_on(KILL_SWITCH, "acct-a")
    assert snapshot({KILL_SWITCH: True}, {KILL_SWITCH: False}).is_on(KILL_SWITCH, "acct-a")
    assert not snapshot({KILL_SWITCH: False}, {KILL_SWITCH: False}).is_on(KILL_SWITCH, "acct-a")


def test_a_lane_that_sets_nothing_follows_the_global_value() -> None:
    s = snapshot({TRADING_ENABLED: True, KILL_SWITCH: False}, {})
    assert s.lane_enabled("acct-a")
    assert not s.is_on(KILL_SWITCH, "acct-a")


def test_unavailable_lane_fails_safe() -> None:
    s = FlagSnapshot(
        {
            GLOBAL_ENTITY: EntityFlags(GLOBAL_ENTITY, {TRADING_ENABLED: True}),
            LANE: EntityFlags(LANE, error="flipt unreachable"),
        }
    )
    assert not s.available
    assert not s.lane_available("acct-a")
    assert not s.lane_enabled("acct-a")
    assert s.is_on(KILL_SWITCH, "acct-a")  # engaged when unknown
    assert not s.is_on(CRYPTO_ENABLED, "acct-a")
    assert s.lane_error("acct-a") == "torghut:acct-a: flipt unreachable"
    assert s.error == "torghut:acct-a: flipt unreachable"
    assert s.is_on(TRADING_ENABLED)  # the global entity itself is fine


def test_global_failure_affects_every_lane() -> None:
    s = FlagSnapshot(
        {
            GLOBAL_ENTITY: EntityFlags(GLOBAL_ENTITY, error="timeout"),
            LANE: EntityFlags(LANE, {TRADING_ENABLED: True}),
        }
    )
    assert not s.lane_available("acct-a")
    assert not s.is_on(TRADING_ENABLED)


def test_unknown_lane_is_unavailable() -> None:
    s = snapshot({TRADING_ENABLED: True})
    assert not s.lane_available("never-evaluated")
    assert not s.lane_enabled("never-evaluated")


def test_not_loaded_snapshot_blocks_everything() -> None:
    s = FlagSnapshot.unavailable("flags not loaded yet", (GLOBAL_ENTITY, LANE))
    assert not s.available and not s.lane_enabled("acct-a")
    assert all(s.is_on(k, "acct-a") is (k == KILL_SWITCH) for k in ALL_KEYS)


def test_status_view() -> None:
    view = snapshot({TRADING_ENABLED: True}, {}).as_dict()
    assert view["available"] is True
    assert view["entities"] == {
        "torghut": {"values": {TRADING_ENABLED: True}, "error": None},
        "torghut:acct-a": {"values": {}, "error": None},
    }
