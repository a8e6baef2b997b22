"""Historical replay: `ta_signals` of a time range, published into the pipeline for paper accounts.

Rows are read in key order `(event_ts, symbol, seq)` by keyset pages, versions of a key not yet
merged collapse to the newest ingest, and every record carries the replay headers
(`streams.domain.replay`) that restrict the fan-out to the chosen paper accounts and keep the
live dedupe watermark out of it. The same range read twice yields the same records in the same
order: `ReplayResult.digest` (sha256 over every published key and value) shows it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from pydantic import ValidationError

from schemas.ta_signal import TaSignal, check_numbers
from streams.clickhouse.client import ClickHouse
from streams.clickhouse.publish import signal_record
from streams.clickhouse.queries import RangeQuery, range_page
from streams.clickhouse.rows import row_key, row_to_signal
from streams.clickhouse.source import SignalPublisher
from streams.domain.ch_cursor import RowKey
from streams.domain.replay import ReplayScope

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 5000


@dataclass(frozen=True)
class ReplayResult:
    published: int
    invalid: int
    first: RowKey | None
    last: RowKey | None
    digest: str


async def run_replay(
    ch: ClickHouse,
    publisher: SignalPublisher,
    query: RangeQuery,
    scope: ReplayScope,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> ReplayResult:
    digest = hashlib.sha256()
    published = invalid = 0
    first: RowKey | None = None
    after: RowKey | None = None
    headers = scope.headers()
    while True:
        rows = await range_page(ch, query, after, page_size)
        if not rows:
            break
        signals: list[TaSignal] = []
        for row in rows:
            try:
                # InvalidSignal (NaN, negative price) is a ValueError: skipped, never published
                signals.append(check_numbers(row_to_signal(row)))
            except (ValidationError, ValueError, TypeError, KeyError):
                invalid += 1
                logger.warning(
                    "replay skips a row that does not convert", extra={"seq": row.get("seq")}
                )
        await publisher.publish(signals, headers=headers)
        for sig in signals:
            key, value = signal_record(sig)
            digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        published += len(signals)
        first = first or row_key(rows[0])
        after = row_key(rows[-1])
        if len(rows) < page_size:
            break
    return ReplayResult(published, invalid, first, after, digest.hexdigest())
