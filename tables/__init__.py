"""Changelog-backed tables, all declared here (`declare_tables`, called once by `streams.app`).

faust needs tables declared on the app before the worker starts; the handles are then passed
explicitly (through `streams.app.tables` to the worker context), never imported as globals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.domain.signal_order import WatermarkTracker
from streams.settings import Settings, SignalSource
from tables.clickhouse_cursor import declare_clickhouse_cursor
from tables.durable import ChangelogAcks
from tables.lane_cursors import declare_lane_cursors
from tables.ledger import declare_ledger, declare_slots
from tables.order_index import declare_order_index
from tables.signal_watermarks import declare_watermarks


@dataclass(frozen=True)
class Tables:
    acks: ChangelogAcks  # pending changelog writes of the acked tables (ledger, cursors, index)
    watermarks: WatermarkTracker  # signal-watermarks, fronted by its in-memory tracker
    ledger: Any
    ledger_slots: Any  # one decision per account signal slot
    lane_cursors: Any
    order_index: Any
    clickhouse_cursor: Any | None  # only with TRADING_SIGNAL_SOURCE=clickhouse


def declare_tables(app: faust.App, settings: Settings) -> Tables:
    acks = ChangelogAcks()
    # Declaration order is the order of `faust tables`.
    clickhouse_cursor = (
        declare_clickhouse_cursor(app)
        if settings.signal_source is SignalSource.clickhouse
        else None
    )
    lane_cursors = declare_lane_cursors(app, settings, acks)
    ledger = declare_ledger(app, settings, acks)
    ledger_slots = declare_slots(app, settings, acks)
    order_index = declare_order_index(app, settings, acks)
    watermarks = declare_watermarks(app, settings)
    return Tables(
        acks, watermarks, ledger, ledger_slots, lane_cursors, order_index, clickhouse_cursor
    )
