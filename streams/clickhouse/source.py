"""The ClickHouse poll source: `ta_signals` rows after the keyset cursor, into the signals topic.

One poll = one query for the rows the cursor state has not handed on (see
`streams.domain.ch_cursor` for the exact rule), conversion to `TaSignal`, publication onto the
signals topic keyed by symbol (acknowledged), then the new state is written to the cursor table.
Publishing before saving makes it at-least-once: a crash between the two re-reads the batch
after restart and the signals agent's dedupe watermark drops the repeats; a restart that saved
reads nothing twice and skips nothing.

Event time is bounded: the query reads no row dated after `now + max_future` (it is read once its
time comes), and a row that still comes back beyond it is dead-lettered (`event_time_in_future`)
and not accepted, so the cursor never jumps ahead. A row that converts but carries NaN, an
infinity or a negative price is dead-lettered (`invalid_number`) and not published: the JSON it
would be published as cannot carry NaN (it would arrive as null, silently another signal).

Where the state starts: the cursor table; else (table lost, first start of a new app id) the
Postgres mirror `trade_cursor` (`source='clickhouse'`), taking the cursor furthest behind
across the enabled accounts so that no account skips rows; else `now - lookback`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from schemas.ta_signal import InvalidSignal, TaSignal, check_numbers
from streams.clickhouse import metrics
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.queries import poll_rows
from streams.clickhouse.rows import row_key, row_to_signal
from streams.clickhouse.status import SourceStatus
from streams.domain.ch_cursor import (
    CursorState,
    RowKey,
    advance,
    cold_start,
    min_cursor,
    poll_window,
    resume_at,
    state_from_dict,
    state_to_dict,
)

logger = logging.getLogger(__name__)

CURSOR_SOURCE = "clickhouse"
STATE_KEY = "state"

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class CursorStore(Protocol):
    def load(self) -> CursorState | None: ...

    async def save(self, state: CursorState) -> None: ...


class SignalPublisher(Protocol):
    async def publish(
        self, signals: Sequence[TaSignal], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        """Publish in order, keyed by symbol; return once every record is acknowledged."""


class CursorMirror(Protocol):
    async def resume_point(self) -> RowKey | None: ...

    async def mirror(self, key: RowKey) -> None: ...


class InvalidRowSink(Protocol):
    async def __call__(
        self, row: dict[str, Any], error: str, reason: str = "clickhouse_row_invalid"
    ) -> None: ...


class MappingCursorStore:
    """The cursor state as one JSON value under one key of a mapping (the faust table)."""

    def __init__(
        self,
        mapping: MutableMapping[str, Any],
        *,
        key: str = STATE_KEY,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._mapping = mapping
        self._key = key
        self._flush = flush

    def load(self) -> CursorState | None:
        raw = self._mapping.get(self._key)
        return None if raw is None else state_from_dict(raw)

    async def save(self, state: CursorState) -> None:
        self._mapping[self._key] = state_to_dict(state)
        if self._flush is not None:
            await self._flush()


@dataclass(frozen=True)
class PollResult:
    read: int
    published: int
    late: int
    dropped: int
    invalid: int
    cursor: RowKey | None


class PollSource:
    def __init__(
        self,
        ch: ClickHouse,
        store: CursorStore,
        publisher: SignalPublisher,
        *,
        lookback: timedelta,
        batch_size: int,
        mirror: CursorMirror | None = None,
        on_invalid: InvalidRowSink | None = None,
        status: SourceStatus | None = None,
        clock: Clock = utc_now,
        max_future: timedelta = timedelta(seconds=300),
    ) -> None:
        self.ch = ch
        self.status = status if status is not None else SourceStatus(enabled=True)
        self.store = store
        self.publisher = publisher
        self.lookback = lookback
        self.batch_size = batch_size
        self.mirror = mirror
        self.on_invalid = on_invalid
        self.clock = clock
        self.max_future = max_future
        self._unsaved: CursorState | None = None

    async def current_state(self) -> CursorState:
        """The stored state; else (saved at once) the Postgres mirror's or a cold start."""
        stored = self.store.load()
        if stored is not None:
            return stored
        seeded = await self._mirror_resume_point()
        if seeded is not None:
            logger.info("clickhouse source resumes from trade_cursor", extra=_key_fields(seeded))
            state = resume_at(seeded)
        else:
            state = cold_start(self.clock(), self.lookback)
            assert state.floor is not None
            logger.info("clickhouse source cold start", extra=_key_fields(state.floor))
        await self.store.save(state)
        return state

    async def _mirror_resume_point(self) -> RowKey | None:
        if self.mirror is None:
            return None
        try:
            return await self.mirror.resume_point()
        except Exception as exc:  # noqa: BLE001 - Postgres down: the table is the authority
            logger.warning(
                "trade_cursor unavailable, starting without it", extra={"error": type(exc).__name__}
            )
            return None

    async def poll_once(self) -> PollResult:
        if self._unsaved is not None:
            # A published batch whose cursor write failed: nothing more is published (and the
            # batch is not published again) until that cursor is saved, unless another leader
            # has moved the stored cursor past it meanwhile.
            stored = self.store.load()
            if stored is None or _behind(stored.cursor, self._unsaved.cursor):
                await self.store.save(self._unsaved)
            self._unsaved = None
        state = await self.current_state()
        until = self.clock() + self.max_future
        rows = await poll_rows(self.ch, poll_window(state, self.lookback), self.batch_size, until)
        by_key: dict[RowKey, dict[str, Any]] = {}
        for row in rows:
            key = row_key(row)
            if key.event_ts > until:  # the query bounds it; never let one move the cursor
                await self._invalid(
                    row, f"event_ts after {until.isoformat()}", "event_time_in_future"
                )
            else:
                by_key[key] = row
        step = advance(state, list(by_key), self.lookback)
        signals, invalid = await self._convert([by_key[k] for k in step.accepted])
        if signals:
            await self.publisher.publish(signals)
        if step.accepted:
            self._unsaved = step.state
            await self.store.save(step.state)
            self._unsaved = None
        await self._mirror(step.state.cursor)  # every tick: the mirror throttles and dedupes
        result = PollResult(
            len(rows), len(signals), step.late, step.dropped, invalid, step.state.cursor
        )
        self._record(result)
        return result

    async def poll_until_caught_up(self, max_pages: int = 20) -> list[PollResult]:
        """Poll pages until one comes back short (caught up) or `max_pages` were read."""
        results: list[PollResult] = []
        for _ in range(max_pages):
            results.append(await self.poll_once())
            if results[-1].read < self.batch_size:
                break
        return results

    async def _convert(self, rows: Sequence[dict[str, Any]]) -> tuple[list[TaSignal], int]:
        signals: list[TaSignal] = []
        invalid = 0
        for row in rows:
            try:
                signals.append(check_numbers(row_to_signal(row)))
            except InvalidSignal as exc:
                invalid += 1
                await self._invalid(row, str(exc), exc.reason)
            except (ValidationError, ValueError, TypeError, KeyError) as exc:
                invalid += 1
                await self._invalid(row, f"{type(exc).__name__}: {exc}", "clickhouse_row_invalid")
        return signals, invalid

    async def _invalid(self, row: dict[str, Any], error: str, reason: str) -> None:
        error = error[:500]
        logger.warning(
            "ta_signals row refused (%s)", reason, extra={**_row_fields(row), "error": error}
        )
        if self.on_invalid is not None:
            await self.on_invalid(row, error, reason)

    async def _mirror(self, cursor: RowKey | None) -> None:
        if self.mirror is None or cursor is None:
            return
        try:
            await self.mirror.mirror(cursor)
        except Exception as exc:  # noqa: BLE001 - a Postgres outage must not stop the source
            logger.warning("trade_cursor mirror failed", extra={"error": type(exc).__name__})

    def _record(self, result: PollResult) -> None:
        metrics.rows_published.inc(result.published)
        metrics.rows_late.inc(result.late)
        metrics.rows_dropped.inc(result.dropped)
        metrics.rows_invalid.inc(result.invalid)
        now = self.clock()
        if result.cursor is not None:
            metrics.cursor_lag.set(max(0.0, (now - result.cursor.event_ts).total_seconds()))
        self.status.record_poll(now, result.published, result.late, result.cursor)


def _behind(stored: RowKey | None, mine: RowKey | None) -> bool:
    return mine is not None and (stored is None or stored < mine)


def _key_fields(key: RowKey) -> dict[str, Any]:
    return {"event_ts": key.event_ts.isoformat(), "symbol": key.symbol, "seq": key.seq}


def _row_fields(row: dict[str, Any]) -> dict[str, Any]:
    return {"symbol": str(row.get("symbol")), "seq": row.get("seq")}


class RepositoryCursorMirror:
    """Mirror the cursor per enabled account into Postgres `trade_cursor`.

    Every account receives every signal (the signals agent fans out), so each account's row
    holds the same position; the resume point is the minimum over the accounts, so an account
    whose row lags (added later, or a failed mirror) never has rows skipped for it. Writes are
    throttled to one round per `min_interval_seconds`; the newest cursor is written on the
    first tick after the interval, and an unchanged cursor is not written again.
    """

    def __init__(
        self,
        repository: Any,
        accounts: Callable[[], Sequence[str]],
        *,
        min_interval_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._repo = repository
        self._accounts = accounts
        self._min_interval = min_interval_seconds
        self._monotonic = monotonic
        self._last_at: float | None = None
        self._mirrored: RowKey | None = None

    async def resume_point(self) -> RowKey | None:
        keys: list[RowKey | None] = []
        for account in self._accounts():
            row = await self._repo.get_cursor(CURSOR_SOURCE, account)
            keys.append(
                None
                if row is None
                else RowKey(row.cursor_ts, row.cursor_symbol or "", row.cursor_seq or 0)
            )
        return min_cursor(keys)

    async def mirror(self, key: RowKey) -> None:
        now = self._monotonic()
        if key == self._mirrored:
            return
        if self._last_at is not None and now - self._last_at < self._min_interval:
            return
        self._last_at = now
        failed = False
        for account in self._accounts():
            try:
                await self._repo.upsert_cursor(
                    CURSOR_SOURCE, account, key.event_ts, key.symbol, key.seq
                )
            except Exception as exc:  # noqa: BLE001 - one account's failure spares the others
                failed = True
                metrics.cursor_mirror_errors.labels(account=account).inc()
                logger.warning(
                    "trade_cursor mirror failed",
                    extra={"account": account, "error": type(exc).__name__},
                )
        if not failed:
            self._mirrored = key
