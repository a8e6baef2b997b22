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

    assert build_command(None, True, True, "drill", "op").scope == "*"
    assert build_command("alpha", False, False, "done", "op").engaged is False
    with pytest.raises(SystemExit):
        build_command("alpha", True, True, "x", "op")
    with pytest.raises(SystemExit):
        build_command("alpha", False, None, "x", "op")
