"""Replay scope: the headers, who a replay may reach, and the refusal of live accounts."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.domain.replay import (
    REPLAY_ACCOUNTS_HEADER,
    REPLAY_ID_HEADER,
    ReplayRefused,
    ReplayScope,
    check_replay_accounts,
    replay_lanes,
    replay_scope_from_headers,
    replay_targets,
)


@dataclass(frozen=True)
class Acct:
    label: str
    is_live: bool = False
    enabled: bool = True


@dataclass(frozen=True)
class ModelessAcct:
    label: str
    enabled: bool = True


ACCOUNTS = [
    Acct("paper-a"),
    Acct("paper-b"),
    Acct("live-1", is_live=True),
    Acct("off", enabled=False),
]


def test_headers_round_trip_as_list_or_mapping() -> None:
    scope = ReplayScope("replay-1", ("paper-a", "paper-b"))
    assert replay_scope_from_headers(scope.headers()) == scope
    assert replay_scope_from_headers(dict(scope.headers())) == scope
    assert replay_scope_from_headers(None) is None
    assert replay_scope_from_headers({"other": b"x"}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {REPLAY_ID_HEADER: b"r"},
        {REPLAY_ID_HEADER: b"r", REPLAY_ACCOUNTS_HEADER: b""},
        {REPLAY_ID_HEADER: b"", REPLAY_ACCOUNTS_HEADER: b"a"},
        {REPLAY_ID_HEADER: b"\xff", REPLAY_ACCOUNTS_HEADER: b"a"},
    ],
)
def test_malformed_replay_headers_raise(headers: dict[str, bytes]) -> None:
    with pytest.raises(ValueError):
        replay_scope_from_headers(headers)


def test_targets_are_listed_enabled_paper_accounts_only() -> None:
    scope = ReplayScope("r", ("paper-b", "live-1", "off", "ghost"))
    assert replay_targets(scope, ACCOUNTS) == ["paper-b"]
    assert replay_lanes(("live-1", "paper-a", "paper-b"), scope, ACCOUNTS) == ("paper-b",)


def test_an_account_without_a_mode_is_never_a_target() -> None:
    assert replay_targets(ReplayScope("r", ("x",)), [ModelessAcct("x")]) == []


def test_default_replay_targets_every_enabled_paper_account() -> None:
    assert check_replay_accounts(None, ACCOUNTS) == ("paper-a", "paper-b")


def test_live_unknown_and_disabled_accounts_are_refused() -> None:
    with pytest.raises(ReplayRefused, match="live-1: live account"):
        check_replay_accounts(["paper-a", "live-1"], ACCOUNTS)
    with pytest.raises(ReplayRefused, match=r"ghost: unknown.*off: account is disabled"):
        check_replay_accounts(["ghost", "off"], ACCOUNTS)
    with pytest.raises(ReplayRefused, match="no enabled paper account"):
        check_replay_accounts([], [Acct("live-1", is_live=True)])
