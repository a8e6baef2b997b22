"""Lane cursors: `<source>:<account_label>` → the last decision processed (event_ts, symbol, seq).

Only ever advances (keyset order). Written by the lanes agent, mirrored to Postgres
`trade_cursor` by the lanes timer.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.execution.cursor import LaneCursor, cursor_key
from streams.settings import Settings
from tables.durable import ChangelogAcks, add_account_table


def declare_lane_cursors(app: faust.App, settings: Settings, acks: ChangelogAcks) -> Any:
    return add_account_table(
        app,
        settings,
        acks,
        "lane-cursors",
        "Lane cursors: <source>:<label> -> last processed (event_ts, symbol, seq).",
    )


class FaustCursors:
    def __init__(self, table: Any, source: str) -> None:
        self.table = table
        self.source = source

    def get(self, account_label: str) -> LaneCursor | None:
        raw = self.table.get(cursor_key(self.source, account_label).encode())
        return LaneCursor.model_validate_json(raw) if raw is not None else None

    def advance(self, account_label: str, cursor: LaneCursor) -> bool:
        """Store `cursor` if it is past the current one (inside the lanes agent); True if so."""
        current = self.get(account_label)
        if current is not None and cursor.position <= current.position:
            return False
        self.table[cursor_key(self.source, account_label).encode()] = (
            cursor.model_dump_json().encode()
        )
        return True
