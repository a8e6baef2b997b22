"""Kill-switch book from the control topic, crash points, and the CLI's command building."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.control import ControlCommand
from streams.domain.kill_switch import KillSwitchBook, scope_of_key
from streams.execution.crash import CrashPoints


def command(account: str | None, engaged: bool) -> ControlCommand:
    return ControlCommand(account=account, engaged=engaged, operator="op", reason="r")


def test_account_and_global_scopes_are_independent() -> None:
    book = KillSwitchBook()
    assert book.apply(command("alpha", True))
    assert book.engaged_for("alpha") is not None and book.engaged_for("beta") is None
    assert book.apply(command(None, True))
    assert book.engaged_for("beta") is not None
    book.apply(command("alpha", False))
    assert book.engaged_for("alpha") is not None  # the global switch still holds it
    book.apply(command(None, False))
    assert book.engaged_for("alpha") is None
    assert not book.apply(command(None, False))  # no change


def test_tombstone_forgets_a_scope() -> None:
    book = KillSwitchBook()
    book.apply(command("alpha", True))
    assert scope_of_key(b"kill_switch:alpha") == "alpha"
    assert scope_of_key(b"other:alpha") is None
    assert book.forget("alpha") and book.engaged_for("alpha") is None


def test_crash_point_fires_once_per_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exits: list[int] = []
    monkeypatch.setattr("os._exit", exits.append)
    points = CrashPoints("after_submit", tmp_path)
    points.point("before_persist")
    assert exits == []
    points.point("after_submit")
    points.point("after_submit")
    assert exits == [137]
    with pytest.raises(ValueError):
        CrashPoints("nowhere", tmp_path)


def test_cli_needs_one_scope_and_a_direction() -> None:
    from streams.cli.kill_switch import build_command

    known = ("alpha", "beta")
    assert build_command(None, True, True, "drill", "op", known).scope == "*"
    assert build_command("alpha", False, False, "done", "op", known).engaged is False
    with pytest.raises(SystemExit):
        build_command("alpha", True, True, "x", "op", known)
    with pytest.raises(SystemExit):
        build_command("alpha", False, None, "x", "op", known)


@pytest.mark.parametrize(
    ("account", "message"),
    [("ho-ghost", "unknown account 'ho-ghost'"), ("HO ALPHA!", "--account must be")],
)
def test_cli_refuses_an_account_the_registry_does_not_know(account: str, message: str) -> None:
    from streams.cli.kill_switch import build_command

    with pytest.raises(SystemExit) as caught:
        build_command(account, False, True, "x", "op", ("alpha", "beta"))
    assert message in str(caught.value)
    assert "configured: alpha, beta" in str(caught.value) or "must be" in str(caught.value)


async def test_control_feed_keeps_no_state_for_an_account_the_registry_does_not_know() -> None:
    """A command naming an unknown account never reaches the book: dead-lettered when it
    arrives live, only counted when met again in the start-up replay."""
    from types import SimpleNamespace
    from typing import Any

    from schemas.codecs import decode_dead_letter, encode_control
    from streams.dlq import DeadLetters
    from streams.execution.control_feed import ControlFeed

    sent: list[bytes] = []

    class Sink:
        async def send(self, *, key: bytes | None, value: bytes) -> None:
            sent.append(value)

    book = KillSwitchBook()
    feed = ControlFeed(
        "127.0.0.1:1",
        "ctl",
        book,
        known_accounts=frozenset({"alpha"}),
        dead_letters=DeadLetters(Sink()),
    )

    def record(account: str, offset: int) -> Any:
        cmd = ControlCommand(account=account, engaged=True, operator="op", reason="r")
        value = encode_control(cmd)
        return SimpleNamespace(
            topic="ctl", partition=0, offset=offset, key=b"k", value=value, timestamp=0
        )

    await feed._apply(record("ho-ghost", 1))  # replay: not live yet
    assert book.as_dict() == {} and sent == [] and feed.unknown_accounts == 1
    feed.caught_up.set()
    await feed._apply(record("ho-ghost", 2))
    await feed._apply(record("alpha", 3))
    assert [decode_dead_letter(v).reason for v in sent] == ["unknown_account"]
    assert decode_dead_letter(sent[0]).source_offset == 2
    assert list(book.as_dict()) == ["alpha"]
