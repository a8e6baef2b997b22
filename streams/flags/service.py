"""The flag service: refreshes a `FlagSnapshot` in the background; the hot path only reads it.

`run_forever()` (started as an app task by `agents/flags.py`) re-evaluates every entity each
`TRADING_FLAGS_REFRESH_SECONDS`. A backend failure never raises out of `refresh()`: the affected
entities become unavailable in the snapshot and their lanes fail safe until the next good refresh.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import Gauge

from streams.flags.core import GLOBAL_ENTITY, EntityFlags, FlagSnapshot, lane_entity
from streams.flags.flipt import FliptFlagBackend
from streams.flags.static import StaticFlagBackend, settings_defaults
from streams.settings import FlagsBackend, Settings

log = logging.getLogger(__name__)

FLAGS_AVAILABLE = Gauge(
    "torghut_flags_available",
    "1 when the entity's feature flags were evaluated by the last refresh, else 0 (fail safe).",
    ["entity"],
)

Listener = Callable[[FlagSnapshot, FlagSnapshot], None]


class FlagBackend(Protocol):
    name: str

    async def evaluate(self, entities: Sequence[str]) -> dict[str, EntityFlags]: ...

    async def close(self) -> None: ...


def _utc_now() -> datetime:
    return datetime.now(UTC)


def flag_entities(account_labels: Iterable[str]) -> tuple[str, ...]:
    """The global entity and one entity per lane, deduplicated, in a stable order."""
    lanes = sorted({lane_entity(label) for label in account_labels})
    return (GLOBAL_ENTITY, *lanes)


class FlagService:
    def __init__(
        self,
        backend: FlagBackend,
        entities: Sequence[str],
        refresh_seconds: float,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._backend = backend
        self._entities = tuple(entities)
        self._interval = max(0.05, refresh_seconds)
        self._clock = clock
        self._listeners: list[Listener] = []
        self._loaded = False
        self._snapshot = FlagSnapshot.unavailable("flags not loaded yet", self._entities)

    @property
    def snapshot(self) -> FlagSnapshot:
        return self._snapshot

    @property
    def entities(self) -> tuple[str, ...]:
        return self._entities

    def subscribe(self, listener: Listener) -> None:
        """Call `listener(previous, current)` after every refresh (e.g. kill switch engaged)."""
        self._listeners.append(listener)

    async def ensure_loaded(self) -> FlagSnapshot:
        if not self._loaded:
            await self.refresh()
        return self._snapshot

    async def refresh(self) -> FlagSnapshot:
        try:
            values = await self._backend.evaluate(self._entities)
        except Exception as exc:  # noqa: BLE001 - a backend bug must fail safe, not stop refreshing
            reason = f"flag backend failed ({type(exc).__name__})"
            values = {e: EntityFlags(e, error=reason) for e in self._entities}
        snapshot = FlagSnapshot(values, backend=self._backend.name, fetched_at=self._clock())
        self._publish(snapshot)
        return snapshot

    def _publish(self, snapshot: FlagSnapshot) -> None:
        previous, self._snapshot, self._loaded = self._snapshot, snapshot, True
        for entity in self._entities:
            FLAGS_AVAILABLE.labels(entity=entity).set(1 if snapshot.entity_available(entity) else 0)
        if previous.available != snapshot.available or previous.error != snapshot.error:
            level = logging.INFO if snapshot.available else logging.WARNING
            log.log(
                level,
                "feature flags %s",
                "available" if snapshot.available else "unavailable",
                extra={"flags_backend": snapshot.backend, "flags_error": snapshot.error},
            )
        for listener in self._listeners:
            try:
                listener(previous, snapshot)
            except Exception:  # one listener must not starve the others
                log.exception("flag listener failed")

    async def close(self) -> None:
        await self._backend.close()

    async def run_forever(self) -> None:
        """Refresh now and then every interval until cancelled."""
        try:
            while True:
                await self.refresh()
                await asyncio.sleep(self._interval)
        finally:
            await self._backend.close()


def build_backend(settings: Settings) -> FlagBackend:
    if settings.flags_backend is FlagsBackend.flipt:
        return FliptFlagBackend(
            settings.flipt_url,
            settings.flipt_namespace,
            settings.flipt_token,
            settings_defaults(settings),
            timeout_seconds=min(2.0, max(0.2, settings.flags_refresh_seconds)),
        )
    return StaticFlagBackend(settings)


def build_flag_service(settings: Settings, account_labels: Iterable[str]) -> FlagService:
    return FlagService(
        build_backend(settings), flag_entities(account_labels), settings.flags_refresh_seconds
    )


def lane_labels(settings: Settings, enabled: Iterable[str]) -> list[str]:
    """Labels of the enabled lanes (the account registry decides), plus the primary label."""
    return [*enabled, settings.account_label]
