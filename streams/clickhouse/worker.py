"""The worker's ClickHouse collaborators (in the worker context; chdb loads only when used).

- `TRADING_SIGNAL_SOURCE=clickhouse`: the leader polls `ta_signals` after the cursor (the
  `clickhouse-cursor` table) and publishes the rows onto the signals topic, so the same `signals`
  agent (dedupe watermark, strategy runtime, fan-out) handles them.
- `TRADING_TA_FRESHNESS_ENABLED=true`: every worker refreshes its `FreshnessState` from ClickHouse.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.clickhouse import metrics
from streams.clickhouse.client import ClickHouse, open_clickhouse
from streams.clickhouse.freshness import refresh_freshness
from streams.clickhouse.publish import TopicPublisher
from streams.clickhouse.source import (
    CursorMirror,
    InvalidRowSink,
    MappingCursorStore,
    PollSource,
    RepositoryCursorMirror,
)
from streams.clickhouse.status import SourceStatus
from streams.dlq import DeadLetters
from streams.domain.freshness import FreshnessState
from streams.settings import Settings, SignalSource

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(UTC)


class ClickHouseServices:
    """One ClickHouse facade per worker (chdb allows one engine path per process), opened on
    first use; the leader's poll source and its status; the TA freshness check."""

    def __init__(
        self,
        settings: Settings,
        freshness: FreshnessState,
        *,
        dead_letters: DeadLetters,
        repository: Callable[[], Awaitable[Any]],
        enabled_accounts: Sequence[str],
    ) -> None:
        self.settings = settings
        self.freshness = freshness
        self.source_status = SourceStatus(enabled=settings.signal_source is SignalSource.clickhouse)
        self._dead_letters = dead_letters
        self._repository = repository
        self._accounts = tuple(enabled_accounts)
        self._client: ClickHouse | None = None
        self._source: PollSource | None = None

    def client(self) -> ClickHouse:
        if self._client is None:
            self._client = open_clickhouse(self.settings.clickhouse_dsn.get_secret_value())
        return self._client

    # ---- the leader's poll source (TRADING_SIGNAL_SOURCE=clickhouse)
    async def poll(
        self, cursor_table: MutableMapping[str, Any], topic: Any, flush: Callable[[], Any]
    ) -> None:
        """Publish the new `ta_signals` rows (pages until caught up); a failure is recorded and
        the next tick retries from the saved cursor."""
        try:
            if self._source is None:
                self._source = self.build_source(
                    cursor_table,
                    topic,
                    flush=flush,
                    mirror=LazyRepositoryMirror(self._repository, lambda: self._accounts),
                    on_invalid=self._dead_letter_row,
                )
            await self._source.poll_until_caught_up()
        except Exception as exc:  # noqa: BLE001 - see above
            metrics.poll_errors.inc()
            self.source_status.record_error(_now(), f"{type(exc).__name__}: {exc}")
            error = self.source_status.last_error
            log.warning("clickhouse poll failed: %s", error, extra={"error": error})

    async def _dead_letter_row(
        self, row: dict[str, Any], error: str, reason: str = "clickhouse_row_invalid"
    ) -> None:
        await self._dead_letters.send(
            reason=reason,
            topic="clickhouse:ta_signals",
            partition=None,
            offset=None,
            key=str(row.get("symbol", "")).encode(),
            value=json.dumps(row, default=str, sort_keys=True).encode(),
            error=error,
        )

    # ---- TA freshness (TRADING_TA_FRESHNESS_ENABLED=true)
    async def check_freshness(self) -> None:
        """Newest TA event time per class vs the SLO (the lanes consult it); never raises."""
        try:
            await refresh_freshness(self.client(), self.freshness, _now())
        except Exception as exc:  # noqa: BLE001 - a failed check must not stop the timer
            self.freshness.record_error(type(exc).__name__)
            log.warning("TA freshness check failed: %s", type(exc).__name__)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def build_source(
        self,
        table: MutableMapping[str, Any],
        topic: Any,
        *,
        flush: Callable[[], Awaitable[None]] | None = None,
        mirror: CursorMirror | None = None,
        on_invalid: InvalidRowSink | None = None,
    ) -> PollSource:
        return PollSource(
            self.client(),
            MappingCursorStore(table, flush=flush),
            TopicPublisher(topic),
            lookback=timedelta(seconds=self.settings.clickhouse_lookback_seconds),
            batch_size=self.settings.clickhouse_batch_size,
            mirror=mirror,
            on_invalid=on_invalid,
            status=self.source_status,
            max_future=timedelta(seconds=self.settings.max_event_time_skew_seconds),
        )


class LazyRepositoryMirror:
    """`RepositoryCursorMirror` over the worker's repository, connected on first use."""

    def __init__(
        self,
        repository: Callable[[], Awaitable[Any]],
        accounts: Callable[[], Sequence[str]],
    ) -> None:
        self._repository = repository
        self._accounts = accounts
        self._mirror: RepositoryCursorMirror | None = None

    async def _get(self) -> RepositoryCursorMirror:
        if self._mirror is None:
            self._mirror = RepositoryCursorMirror(await self._repository(), self._accounts)
        return self._mirror

    async def resume_point(self) -> Any:
        return await (await self._get()).resume_point()

    async def mirror(self, key: Any) -> None:
        await (await self._get()).mirror(key)
