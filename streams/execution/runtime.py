"""The worker's execution runtime: the lane service over faust tables, and the control feed.

Imported by the agents only (it imports the tables, which register on the app).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import faust

from streams.broker.pool import get_broker_pool
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.strategy.catalog import load_catalog
from streams.execution.control_feed import ControlFeed
from streams.execution.persist import LaneSink
from streams.execution.service import LaneService
from streams.execution.startup import load_accounts
from streams.flags.service import get_flag_service
from streams.observability.lag import bootstrap_servers, partition_for_key
from streams.observability.status import board
from streams.persistence.shared import worker_repositories
from streams.settings import Settings, get_settings
from tables.lane_cursors import FaustCursors
from tables.ledger import FaustLedger
from tables.order_index import FaustOrderIndex

log = logging.getLogger(__name__)

control_book = KillSwitchBook()


@lru_cache(maxsize=1)
def get_control_feed() -> ControlFeed:
    settings = get_settings()
    return ControlFeed(
        bootstrap_servers(settings.kafka_brokers),
        settings.control_topic,
        control_book,
        client_id=f"{settings.app_id}-control",
    )


def _disabled_strategies(settings: Settings) -> frozenset[str]:
    try:
        return frozenset(c.id for c in load_catalog(settings) if not c.enabled)
    except ValueError as exc:  # the signals agent reports a bad catalogue; lanes keep trading
        log.warning("strategy catalogue unreadable for the lanes: %s", exc)
        return frozenset()


@lru_cache(maxsize=1)
def get_lane_service() -> LaneService:
    settings = get_settings()
    registry = load_accounts(settings)
    flag_service = get_flag_service()
    return LaneService(
        settings,
        registry,
        ledger=FaustLedger(),
        index=FaustOrderIndex(),
        cursors=FaustCursors(settings.signal_source.value),
        sink=LaneSink(worker_repositories()),
        brokers=get_broker_pool(),
        flags=lambda: flag_service.snapshot,
        book=control_book,
        board=board,
        disabled_strategies=_disabled_strategies(settings),
    )


def lane_service_if_built() -> LaneService | None:
    return get_lane_service() if get_lane_service.cache_info().currsize else None


def assigned_actives(app: faust.App) -> set[Any]:
    try:
        return set(app.assignor.assigned_actives())
    except Exception:  # noqa: BLE001 - not assigned yet
        return set()


def owned_accounts(app: faust.App, service: LaneService) -> set[str]:
    """Lanes whose decisions partition is assigned to this worker."""
    settings = service.settings
    actives = {(tp.topic, tp.partition) for tp in assigned_actives(app)}
    n = settings.topic_partitions
    return {
        label
        for label in service.lanes
        if (settings.decisions_topic, partition_for_key(label.encode(), n)) in actives
    }
