"""Pure parts of the `lanes`, `lag` and `ledger` commands."""

from __future__ import annotations

from streams.observability.inspection import (
    entry_matches,
    jsonable,
    lag_rows,
    lane_rows,
    merge_lanes,
)
from streams.observability.lag import PartitionLag

H1, H2 = "1" * 64, "2" * 64


def lane(owned: bool | None, **extra: object) -> dict[str, object]:
    return {"owned": owned, "enabled": True, "mode": "paper", "up": True, "healthy": True, **extra}


def test_merge_prefers_the_worker_that_owns_the_lane() -> None:
    w1 = {"accounts": {"a": lane(False), "b": lane(True, mode="live")}}
    w2 = {"accounts": {"a": lane(True, mode="paper"), "b": lane(False, mode="stale")}}
    merged = merge_lanes([w1, w2])
    assert list(merged) == ["a", "b"]
    assert merged["a"]["owned"] is True
    assert merged["b"]["mode"] == "live"


def test_lane_rows_show_health_errors_and_lag() -> None:
    lanes = {
        "a": lane(
            True,
            healthy=False,
            problems=["broker_error_auth"],
            last_error={"kind": "auth", "message": "401", "at": "t"},
            lag=[{"lag": 3}, {"lag": 4}],
            kill_switch={"engaged": True},
        )
    }
    row = lane_rows(lanes)[0]
    assert row[0] == "a"
    assert "broker_error_auth" in row
    assert "ENGAGED" in row
    assert "auth: 401" in row
    assert row[-1] == "7"


def test_lag_rows_format_uncommitted_partitions() -> None:
    rows = lag_rows([PartitionLag("t", 0, None, 5, 5, 2.25), PartitionLag("t", 1, 7, 7, 0, 0.0)])
    assert rows == [["t", "0", "-", "5", "5", "2.2"], ["t", "1", "7", "7", "0", "0.0"]]


def test_entry_matches_by_value_account_field_or_key_segment() -> None:
    value = {"account_label": "acct-a", "decision_hash": H1}
    assert entry_matches(H1, value, "acct-a", None)
    assert entry_matches(H1, value, "acct-a", H1)
    assert not entry_matches(H1, value, "acct-a", H2)
    assert not entry_matches(H1, value, "acct-b", None)
    assert entry_matches(f"acct-a:{H2}", {"state": "submitted"}, "acct-a", H2)
    assert not entry_matches(f"acct-ab:{H2}", {"state": "submitted"}, "acct-a", None)


def test_entry_matches_the_lane_ledger_shape() -> None:
    """tables/ledger.py: key `account|hash`, value JSON with the decision nested."""
    key = jsonable(f"acct-a|{H1}".encode())
    value = jsonable(
        b'{"state": "submitted", "decision": {"account_label": "acct-a", '
        b'"decision_hash": "' + H1.encode() + b'"}}'
    )
    assert entry_matches(key, value, "acct-a", None)
    assert entry_matches(key, value, "acct-a", H1)
    assert not entry_matches(key, value, "acct-a", H2)
    assert not entry_matches(key, value, "acct-b", None)


def test_jsonable_decodes_bytes_and_nested_values() -> None:
    assert jsonable(b'{"a": 1}') == {"a": 1}
    assert jsonable(b"\xffraw") == "\ufffdraw"
    assert jsonable({"k": (1, b"x")}) == {"k": [1, "x"]}
