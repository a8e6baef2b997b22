from __future__ import annotations

from pathlib import Path

import pytest

from streams.flags.core import (
    GLOBAL_ENTITY,
    KILL_SWITCH,
    LIVE_ENABLED,
    MULTI_ACCOUNT_ENABLED,
    TRADING_ENABLED,
    FlagSnapshot,
    lane_entity,
)
from streams.flags.static import (
    FlagsConfigError,
    StaticFlagBackend,
    parse_flags_document,
    settings_defaults,
)
from streams.settings import Settings

ENTITIES = (GLOBAL_ENTITY, lane_entity("a"), lane_entity("b"))


def settings(**env: str) -> Settings:
    return Settings(**env)  # type: ignore[arg-type]


def test_defaults_come_from_settings() -> None:
    defaults = settings_defaults(
        settings(
            TRADING_LIVE_ENABLED="true",
            TRADING_MULTI_ACCOUNT_ENABLED="true",
            TRADING_KILL_SWITCH_ENABLED="true",
        )
    )
    assert defaults[TRADING_ENABLED] and defaults[LIVE_ENABLED]
    assert defaults[MULTI_ACCOUNT_ENABLED] and defaults[KILL_SWITCH]
    quiet = settings_defaults(settings())
    assert not quiet[LIVE_ENABLED] and not quiet[KILL_SWITCH] and not quiet[MULTI_ACCOUNT_ENABLED]


async def test_without_a_file_every_lane_follows_the_settings() -> None:
    backend = StaticFlagBackend(settings())
    snapshot = FlagSnapshot(await backend.evaluate(ENTITIES))
    assert snapshot.available
    assert snapshot.lane_enabled("a") and snapshot.lane_enabled("b")
    assert not snapshot.is_on(KILL_SWITCH, "a")


async def test_file_overrides_per_lane_and_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text('"torghut:b": {torghut_trading_enabled: false}\n')
    backend = StaticFlagBackend(settings(TRADING_FLAGS_FILE=str(path)))
    first = FlagSnapshot(await backend.evaluate(ENTITIES))
    assert first.lane_enabled("a") and not first.lane_enabled("b")

    path.write_text('{"torghut:a": {"torghut_trading_kill_switch": true}}')
    second = FlagSnapshot(await backend.evaluate(ENTITIES))
    assert second.lane_enabled("b")
    assert second.is_on(KILL_SWITCH, "a") and not second.is_on(KILL_SWITCH, "b")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("torghut: [1, 2]", "must map flag keys"),
        ("torghut: {torghut_trading_kil_switch: true}", "unknown flag key"),
        ("torghut: {torghut_trading_enabled: 'yes'}", "true or false"),
        ("[1, 2]", "must map entity"),
        ("torghut: {a: [", "not valid"),
    ],
)
def test_malformed_documents_are_rejected(text: str, match: str) -> None:
    with pytest.raises(FlagsConfigError, match=match):
        parse_flags_document(text)


async def test_a_broken_file_makes_every_entity_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "flags.yaml"
    path.write_text("torghut: {torghut_trading_enabled: maybe}\n")
    backend = StaticFlagBackend(settings(TRADING_FLAGS_FILE=str(path)))
    snapshot = FlagSnapshot(await backend.evaluate(ENTITIES))
    assert not snapshot.available
    assert not snapshot.lane_enabled("a")
    assert snapshot.is_on(KILL_SWITCH, "a")
    path.unlink()
    missing = FlagSnapshot(await backend.evaluate(ENTITIES))
    assert "unreadable" in (missing.error or "")
