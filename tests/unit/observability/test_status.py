"""Lane status board: health rule, isolation between lanes, redaction, metrics it feeds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY

from streams.domain import secrets
from streams.observability.status import StatusBoard

T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_board(grace: float = 30.0) -> tuple[StatusBoard, FakeClock]:
    clock = FakeClock()
    board = StatusBoard(clock=clock, error_grace_seconds=grace)
    for label in ("acct-a", "acct-b"):
        board.lane(label).configure(mode="paper", enabled=True)
    return board, clock


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_lane_is_get_or_create() -> None:
    board, _ = make_board()
    assert board.lane("acct-a") is board.lane("acct-a")
    assert board.accounts() == ["acct-a", "acct-b"]


def test_auth_error_makes_only_that_lane_unhealthy() -> None:
    board, _ = make_board()
    board.lane("acct-b").record_error("auth", "401 unauthorized")
    assert board.unhealthy() == ["acct-b"]
    snap = board.snapshot()
    assert snap["healthy"] is False
    assert snap["accounts"]["acct-b"]["problems"] == ["broker_error_auth"]
    assert snap["accounts"]["acct-a"]["healthy"] is True


def test_next_lane_success_does_not_clear_a_failing_lane() -> None:
    """The reference implementation cleared lane B's error when lane A succeeded next."""
    board, clock = make_board()
    board.lane("acct-b").record_error("permission", "403 forbidden")
    clock.advance(1)
    board.lane("acct-a").record_ok()
    board.lane("acct-a").record_submission("h" * 64)
    assert board.unhealthy() == ["acct-b"]
    assert board.snapshot()["accounts"]["acct-b"]["last_error"]["kind"] == "permission"


def test_own_success_clears_the_error_state() -> None:
    board, clock = make_board()
    lane = board.lane("acct-a")
    lane.record_error("auth", "bad key")
    clock.advance(5)
    lane.record_ok()
    assert lane.healthy()
    # The last error stays visible for the operator after recovery.
    assert board.snapshot()["accounts"]["acct-a"]["last_error"]["kind"] == "auth"


def test_retryable_errors_turn_unhealthy_only_after_the_grace_period() -> None:
    board, clock = make_board(grace=30)
    lane = board.lane("acct-a")
    lane.record_error("rate_limit", "429")
    clock.advance(29)
    lane.record_error("timeout", "read timeout")
    assert lane.healthy()
    clock.advance(1)
    assert lane.problems() == ["broker_errors_persist"]
    assert board.lane("acct-b").healthy()


def test_a_stopped_error_streak_recovers_without_a_reported_success() -> None:
    board, clock = make_board(grace=30)
    lane = board.lane("acct-a")
    for _ in range(4):
        lane.record_error("reconcile:timeout", "read timeout")
        clock.advance(10)
    assert lane.problems() == ["broker_errors_persist"]
    clock.advance(21)  # no error for longer than the grace: the streak is over
    assert lane.healthy()


def test_prefixed_non_retryable_class_is_unhealthy_at_once() -> None:
    board, _ = make_board()
    board.lane("acct-a").record_error("reconcile:auth", "401")
    assert board.lane("acct-a").problems() == ["broker_error_auth"]


def test_flags_unavailable_is_unhealthy_and_kill_switch_is_not() -> None:
    board, _ = make_board()
    board.lane("acct-a").set_flags({"torghut_trading_enabled": None}, available=False)
    board.lane("acct-b").set_kill_switch(True, "operator stop")
    assert board.unhealthy() == ["acct-a"]
    kill = board.snapshot()["accounts"]["acct-b"]["kill_switch"]
    assert kill == {"engaged": True, "reason": "operator stop"}


def test_lane_down_and_agent_not_running_are_unhealthy() -> None:
    board, _ = make_board()
    board.lane("acct-a").mark_down("broker client could not be built")
    board.lane("acct-b").set_placement(owned=True, agent_running=False)
    assert board.lane("acct-a").problems() == ["lane_down"]
    assert board.lane("acct-b").problems() == ["lane_agent_not_running"]
    board.lane("acct-a").mark_up()
    assert board.lane("acct-a").healthy()


def test_disabled_and_elsewhere_owned_lanes_are_never_unhealthy_here() -> None:
    board, _ = make_board()
    board.lane("acct-c").configure(mode="live", enabled=False)
    board.lane("acct-c").record_error("auth", "401")
    board.lane("acct-b").set_placement(owned=False, agent_running=None)
    board.lane("acct-b").record_error("auth", "401")
    assert board.unhealthy() == []
    assert board.snapshot()["accounts"]["acct-b"]["owned"] is False


def test_snapshot_is_json_and_carries_the_lane_facts() -> None:
    board, clock = make_board()
    lane = board.lane("acct-a")
    lane.set_flags({"torghut_trading_enabled": True}, available=True)
    lane.record_decision("d" * 64)
    clock.advance(1)
    lane.record_submission("d" * 64, signal_at=T0 - timedelta(seconds=2))
    lane.record_rejection("e" * 64, ["symbol_not_allowed"])
    lane.set_cursor({"source": "order_feed", "offset": 12})
    lane.set_ledger_size(3)
    lane.set_lag([{"topic": "t", "partition": 1, "lag": 0, "lag_seconds": 0.0}])
    entry = json.loads(json.dumps(board.snapshot()))["accounts"]["acct-a"]
    assert entry["last_decision"]["decision_hash"] == "d" * 64
    assert entry["last_submission"]["at"] == (T0 + timedelta(seconds=1)).isoformat()
    assert entry["last_rejection"]["reasons"] == ["symbol_not_allowed"]
    assert entry["flags"] == {"torghut_trading_enabled": True}
    assert entry["cursor"] == {"source": "order_feed", "offset": 12}
    assert entry["ledger_size"] == 3
    assert entry["lag"][0]["partition"] == 1
    assert entry["counts"] == {
        "decisions": 1,
        "submissions": 1,
        "rejections": 1,
        "deferrals": 0,
        "redrives": {"deferred": 0, "parked": 0},
        "deferred_again": 0,
    }
    assert entry["backlog"] == 0


def test_error_messages_and_reasons_are_scrubbed() -> None:
    secrets.register("PKSECRET123456")
    board, _ = make_board()
    lane = board.lane("acct-a")
    lane.record_error("auth", "key PKSECRET123456 refused; dsn postgresql://u:hunter2@db/x")
    lane.set_kill_switch(True, "token=abcdef123")
    text = json.dumps(board.snapshot())
    assert "PKSECRET123456" not in text
    assert "hunter2" not in text
    assert "abcdef123" not in text


def test_recording_feeds_the_per_account_metrics() -> None:
    board, _ = make_board()
    lane = board.lane("acct-metrics")
    before = {
        "dec": sample("torghut_lane_decisions_total", account="acct-metrics"),
        "ord": sample("torghut_lane_orders_submitted_total", account="acct-metrics"),
        "rej": sample("torghut_lane_rejections_total", account="acct-metrics", reason="stale"),
        "err": sample("torghut_broker_errors_total", account="acct-metrics", **{"class": "auth"}),
        "lat": sample("torghut_signal_to_broker_ack_seconds_count", account="acct-metrics"),
    }
    lane.record_decision("a" * 64)
    lane.record_rejection("b" * 64, ["stale"])
    lane.record_error("auth", "401")
    lane.record_submission("a" * 64, at=T0, signal_at=T0 - timedelta(seconds=1))
    assert sample("torghut_lane_decisions_total", account="acct-metrics") == before["dec"] + 1
    assert (
        sample("torghut_lane_orders_submitted_total", account="acct-metrics") == before["ord"] + 1
    )
    assert (
        sample("torghut_lane_rejections_total", account="acct-metrics", reason="stale")
        == before["rej"] + 1
    )
    assert (
        sample("torghut_broker_errors_total", account="acct-metrics", **{"class": "auth"})
        == before["err"] + 1
    )
    assert (
        sample("torghut_signal_to_broker_ack_seconds_count", account="acct-metrics")
        == before["lat"] + 1
    )
