"""Pure evaluation core of the feature flags: keys, entities, and the snapshot the hot path reads.

A snapshot holds one boolean per (entity, key) for the global entity `torghut` and one entity
`torghut:<account_label>` per lane. A lane's effective value combines the global value with the
lane's own: enablers need both on, a kill switch is engaged when either is. When an entity could not
be evaluated the snapshot answers with the fail-safe value (enablers off, kill switch engaged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

TRADING_ENABLED = "torghut_trading_enabled"
LIVE_ENABLED = "torghut_trading_live_enabled"
CRYPTO_ENABLED = "torghut_trading_crypto_enabled"
CRYPTO_LIVE_ENABLED = "torghut_trading_crypto_live_enabled"
MULTI_ACCOUNT_ENABLED = "torghut_trading_multi_account_enabled"
KILL_SWITCH = "torghut_trading_kill_switch"

ALL_KEYS: tuple[str, ...] = (
    TRADING_ENABLED,
    LIVE_ENABLED,
    CRYPTO_ENABLED,
    CRYPTO_LIVE_ENABLED,
    MULTI_ACCOUNT_ENABLED,
    KILL_SWITCH,
)

# Keys that act when *either* the global or the lane entity turns them on.
_EITHER_ON = frozenset({KILL_SWITCH})

GLOBAL_ENTITY = "torghut"
UNAVAILABLE_REASON = "flags_unavailable"


def lane_entity(account_label: str) -> str:
    return f"{GLOBAL_ENTITY}:{account_label}"


def fail_safe_value(key: str) -> bool:
    """The value assumed when a flag cannot be read: nothing enabled, kill switch engaged."""
    return key in _EITHER_ON


def neutral_lane_value(key: str) -> bool:
    """A lane value that leaves the global value in charge (used when a lane sets nothing)."""
    return key not in _EITHER_ON


def combine(key: str, global_value: bool, lane_value: bool) -> bool:
    if key in _EITHER_ON:
        return global_value or lane_value
    return global_value and lane_value


@dataclass(frozen=True)
class EntityFlags:
    """The evaluated flags of one entity, or the error that prevented evaluating them."""

    entity: str
    values: Mapping[str, bool] = field(default_factory=dict)
    error: str | None = None

    @property
    def available(self) -> bool:
        return self.error is None

    def value(self, key: str, default: bool) -> bool:
        return self.values.get(key, default)


@dataclass(frozen=True)
class FlagSnapshot:
    """Immutable view of every entity's flags at one refresh; cheap to read on the hot path."""

    entities: Mapping[str, EntityFlags]
    backend: str = "static"
    fetched_at: datetime | None = None

    @classmethod
    def unavailable(cls, error: str, entities: tuple[str, ...] = (GLOBAL_ENTITY,)) -> FlagSnapshot:
        return cls({e: EntityFlags(e, error=error) for e in entities}, backend="none")

    @property
    def available(self) -> bool:
        return bool(self.entities) and all(e.available for e in self.entities.values())

    @property
    def error(self) -> str | None:
        errors = sorted(f"{e.entity}: {e.error}" for e in self.entities.values() if e.error)
        if not self.entities:
            return "no flags evaluated"
        return "; ".join(errors) or None

    def _entity(self, entity: str) -> EntityFlags:
        found = self.entities.get(entity)
        return found if found is not None else EntityFlags(entity, error="entity not evaluated")

    def entity_available(self, entity: str) -> bool:
        return self._entity(entity).available

    def lane_available(self, account_label: str) -> bool:
        """Both the global and the lane entity were evaluated by the last refresh."""
        return self.entity_available(GLOBAL_ENTITY) and self.entity_available(
            lane_entity(account_label)
        )

    def lane_error(self, account_label: str) -> str | None:
        for entity in (GLOBAL_ENTITY, lane_entity(account_label)):
            error = self._entity(entity).error
            if error is not None:
                return f"{entity}: {error}"
        return None

    def is_on(self, key: str, account_label: str | None = None) -> bool:
        """The effective value of `key` (for a lane when `account_label` is given), fail-safe."""
        if account_label is None:
            entity = self._entity(GLOBAL_ENTITY)
            if not entity.available:
                return fail_safe_value(key)
            return entity.value(key, fail_safe_value(key))
        if not self.lane_available(account_label):
            return fail_safe_value(key)
        global_value = self._entity(GLOBAL_ENTITY).value(key, fail_safe_value(key))
        lane_value = self._entity(lane_entity(account_label)).value(key, neutral_lane_value(key))
        return combine(key, global_value, lane_value)

    def lane_enabled(self, account_label: str) -> bool:
        """Flags available and trading enabled for the lane (a kill switch is reported apart)."""
        return self.lane_available(account_label) and self.is_on(TRADING_ENABLED, account_label)

    def as_dict(self) -> dict[str, object]:
        """JSON-able view for status pages (no secrets live in flags)."""
        return {
            "backend": self.backend,
            "available": self.available,
            "fetched_at": self.fetched_at.isoformat() if self.fetched_at else None,
            "entities": {
                name: {"values": dict(e.values), "error": e.error}
                for name, e in sorted(self.entities.items())
            },
        }
