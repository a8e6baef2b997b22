"""Static flags: defaults derived from settings, overridden by an optional YAML/JSON file.

The file (`TRADING_FLAGS_FILE`) maps entity -> {flag key: bool}, e.g. (YAML)

    torghut: {torghut_trading_enabled: true}
    "torghut:paper-b": {torghut_trading_kill_switch: true}

It is re-read on every refresh, so editing it takes effect without a restart. A file that cannot be
read or parsed makes every entity unavailable: the lanes fail safe instead of trading on stale
flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from streams.flags.core import (
    ALL_KEYS,
    CRYPTO_ENABLED,
    CRYPTO_LIVE_ENABLED,
    GLOBAL_ENTITY,
    KILL_SWITCH,
    LIVE_ENABLED,
    MULTI_ACCOUNT_ENABLED,
    TRADING_ENABLED,
    EntityFlags,
    neutral_lane_value,
)
from streams.settings import Settings


class FlagsConfigError(ValueError):
    """The static flags document is malformed (names the offending entry)."""


def settings_defaults(settings: Settings) -> dict[str, bool]:
    """Global flag values when nothing overrides them: the matching settings, else on."""
    return {
        TRADING_ENABLED: True,
        LIVE_ENABLED: settings.live_enabled,
        CRYPTO_ENABLED: True,
        CRYPTO_LIVE_ENABLED: settings.live_enabled,
        MULTI_ACCOUNT_ENABLED: settings.multi_account_enabled,
        KILL_SWITCH: settings.kill_switch_enabled,
    }


def default_values(entity: str, global_defaults: Mapping[str, bool]) -> dict[str, bool]:
    """Global entity: settings defaults. A lane: neutral values, so the global value rules."""
    if entity == GLOBAL_ENTITY:
        return dict(global_defaults)
    return {key: neutral_lane_value(key) for key in ALL_KEYS}


def parse_flags_document(text: str) -> dict[str, dict[str, bool]]:
    """Parse `{entity: {key: bool}}` (YAML is a superset of JSON); unknown keys are errors."""
    try:
        document: Any = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise FlagsConfigError(f"flags file is not valid YAML/JSON: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise FlagsConfigError("flags file must map entity -> {flag: bool}")
    parsed: dict[str, dict[str, bool]] = {}
    for entity, flags in document.items():
        if not isinstance(entity, str) or not isinstance(flags, dict):
            raise FlagsConfigError(f"flags entry {entity!r} must map flag keys to booleans")
        parsed[entity] = _parse_entity(entity, flags)
    return parsed


def _parse_entity(entity: str, flags: Mapping[Any, Any]) -> dict[str, bool]:
    values: dict[str, bool] = {}
    for key, value in flags.items():
        if key not in ALL_KEYS:
            raise FlagsConfigError(f"flags entry {entity!r}: unknown flag key {key!r}")
        if not isinstance(value, bool):
            raise FlagsConfigError(f"flags entry {entity!r}: {key} must be true or false")
        values[key] = value
    return values


def evaluate_static(
    entities: Sequence[str],
    global_defaults: Mapping[str, bool],
    overrides: Mapping[str, Mapping[str, bool]],
) -> dict[str, EntityFlags]:
    return {
        entity: EntityFlags(
            entity, {**default_values(entity, global_defaults), **overrides.get(entity, {})}
        )
        for entity in entities
    }


class StaticFlagBackend:
    """Settings defaults plus the optional flags file, re-read at each refresh."""

    name = "static"

    def __init__(self, settings: Settings) -> None:
        self._defaults = settings_defaults(settings)
        self._file: Path | None = settings.flags_file

    def _overrides(self) -> dict[str, dict[str, bool]]:
        if self._file is None:
            return {}
        try:
            text = self._file.read_text(encoding="utf-8")
        except OSError as exc:
            raise FlagsConfigError(f"flags file unreadable: {exc.strerror or exc}") from None
        return parse_flags_document(text)

    async def evaluate(self, entities: Sequence[str]) -> dict[str, EntityFlags]:
        try:
            overrides = self._overrides()
        except FlagsConfigError as exc:
            return {entity: EntityFlags(entity, error=str(exc)) for entity in entities}
        return evaluate_static(entities, self._defaults, overrides)

    async def close(self) -> None:
        return None
