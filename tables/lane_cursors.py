"""Lane cursors: `<source>:<account_label>` → the last decision processed (event_ts, symbol, seq).

Only ever advances (keyset order). Written by the lanes agent, mirrored to Postgres
`trade_cursor` by the lanes timer.
"""

from __future__ import annotations

from typing import Any, cast

from streams.app import app, settings
from streams.execution.cursor import LaneCursor, cursor_key
from tables.durable import AckedTable

lane_cursors: Any = app.tables.add(
    cast(
        Any,
        AckedTable(
            app,
            name="lane-cursors",
            key_type=bytes,
            value_type=bytes,
            partitions=settings.topic_partitions,
            beacon=app.tables.beacon,
            help="Lane cursors: <source>:<label> -> last processed (event_ts, symbol, seq).",
        ),
    )
)


class FaustCursors:
    def __init__(self, source: str) -> None:
        self.source = source

    def get(self, account_label: str) -> LaneCursor | None:
        raw = lane_cursors.get(cursor_key(self.source, account_label).encode())
        return LaneCursor.model_validate_json(raw) if raw is not None else None

    def advance(self, account_label: str, cursor: LaneCursor) -> bool:
        """Store `cursor` if it is past the current one (inside the lanes agent); True if so."""
        current = self.get(account_label)
        if current is not None and cursor.position <= current.position:
            return False
        lane_cursors[cursor_key(self.source, account_label).encode()] = (
            cursor.model_dump_json().encode()
        )
        return True
