"""The worker side of observability: reads the faust app's state, refreshes gauges and lanes.

One `WorkerObservability` per worker (in the worker context), shared by the web views and the
monitor timer. It owns a `BrokerLagReader` (lazily started in the worker's event loop) and the
probes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import faust
from aiokafka import TopicPartition

from schemas.control import TradingState
from streams.compat import actor_alive, agent_actors, table_recovery
from streams.kafka_security import aiokafka_kwargs
from streams.observability import metrics
from streams.observability.lag import BrokerLagReader, PartitionLag
from streams.observability.readiness import (
    CachedProbe,
    Check,
    PostgresProbe,
    Probe,
    Readiness,
    recovery_check,
)
from streams.observability.recovery_watchdog import RecoveryState, RecoveryWatchdog
from streams.observability.status import StatusBoard
from streams.ownership import bootstrap_servers, lane_partitions
from streams.persistence.dsn import database_dsn
from streams.settings import Settings

logger = logging.getLogger(__name__)

TRADING_STATES = tuple(s.value for s in TradingState)
LEADER_TOPIC_MARK = "__assignor-__leader"


@dataclass(frozen=True)
class LaneConfig:
    label: str
    mode: str
    enabled: bool


def configure_board(target: StatusBoard, lanes: Iterable[LaneConfig]) -> None:
    """Every configured account appears on the board before any traffic."""
    for lane in lanes:
        target.lane(lane.label).configure(mode=lane.mode, enabled=lane.enabled)


def group_id(app: faust.App) -> str:
    """The consumer group faust commits under (app id, plus `-v{version}` when version > 1)."""
    return str(app.conf.id)


def agent_topics(app: faust.App) -> set[str]:
    return {name for agent in app.agents.values() for name in agent.get_topic_names()}


def owned_stream_partitions(app: faust.App) -> set[TopicPartition]:
    """Source partitions assigned to this worker (changelogs and the leader topic excluded)."""
    try:
        assigned = app.consumer.assignment()
    except Exception:  # noqa: BLE001 - no consumer yet (not started): owns nothing
        return set()
    changelogs = set(app.tables.changelog_topics)
    return {
        TopicPartition(tp.topic, tp.partition)
        for tp in assigned
        if tp.topic not in changelogs and LEADER_TOPIC_MARK not in tp.topic
    }


class ControlFeedView(Protocol):
    """What observability reads of the control feed (`streams.execution.control_feed`)."""

    @property
    def lag(self) -> int: ...

    def is_caught_up(self) -> bool: ...

    def stale_for(self) -> float | None: ...


def control_feed_info(feed: ControlFeedView, stale_after: float) -> dict[str, Any]:
    """The control feed's state for `/trading/status` (worker section): records behind the
    end, seconds since it last advanced (None before its first catch-up) and whether that is
    past `TORGHUT_CONTROL_FEED_STALE_SECONDS` (the lanes then refuse new orders)."""
    stale_for = feed.stale_for()
    return {
        "caught_up": feed.is_caught_up(),
        "lag_records": int(feed.lag),
        "stale_seconds": None if stale_for is None else round(stale_for, 3),
        "stale_after_seconds": stale_after,
        "stale": stale_for is not None and stale_for > stale_after,
    }


def set_control_feed_gauges(feed: ControlFeedView, stale_after: float) -> None:
    metrics.CONTROL_FEED_LAG_RECORDS.set(int(feed.lag))
    metrics.CONTROL_FEED_STALE_SECONDS.set(feed.stale_for() or 0.0)
    metrics.CONTROL_FEED_STALE_THRESHOLD.set(stale_after)
    metrics.CONTROL_FEED_CAUGHT_UP.set(1 if feed.is_caught_up() else 0)


def control_check(caught_up: bool) -> Check:
    """Lanes submit nothing until the kill-switch control topic has been read to its end."""
    if caught_up:
        return Check(True)
    return Check(False, "control topic (kill switches) not yet read to its end")


def recovery_remaining(app: faust.App) -> tuple[int, int]:
    """(active, standby) changelog records left to restore."""
    recovery = table_recovery(app)
    return int(recovery.active_remaining_total()), int(recovery.standby_remaining_total())


def recovery_state(app: faust.App) -> RecoveryState:
    """Whether a table recovery is under way (started and not finished), and what is left."""
    recovery = table_recovery(app)
    active, _ = recovery_remaining(app)
    recovering = bool(recovery.in_recovery) or not recovery.completed.is_set()
    return RecoveryState(recovering=recovering, remaining=active)


def agents_running(app: faust.App, topic: str) -> bool | None:
    """Whether the agents consuming `topic` have a live actor (None: no such agent)."""
    agents = [a for a in app.agents.values() if topic in set(a.get_topic_names())]
    if not agents:
        return None
    return all(any(actor_alive(actor) for actor in agent_actors(agent)) for agent in agents)


class WorkerObservability:
    """One per worker (in the worker context), shared by the web views and the monitor timer."""

    def __init__(
        self,
        app: faust.App,
        settings: Settings,
        target: StatusBoard,
        *,
        lanes: Iterable[LaneConfig],
        account_topics: Iterable[str],
        control: ControlFeedView,
        reconciliation: Callable[[], Check] | None = None,
    ) -> None:
        self.app = app
        self.settings = settings
        self.board = target
        self.board.set_error_grace(settings.lane_error_grace_seconds)
        self._lanes = list(lanes)
        self._account_topics = list(account_topics)
        self._control = control
        self._reconciliation = reconciliation  # owned lanes still reconciling at start
        self._reader: BrokerLagReader | None = None
        self._kafka = CachedProbe(self._kafka_probe)
        self._pg = PostgresProbe(database_dsn(settings))
        self._postgres = CachedProbe(self._pg)
        self._configured = False
        self.last_lag: list[PartitionLag] = []
        self.last_readiness: Readiness | None = None
        self.recovery_watchdog = RecoveryWatchdog(
            lambda: recovery_state(app), settings.recovery_watchdog_seconds
        )

    # ---- setup
    def configure_lanes(self) -> None:
        if not self._configured:
            configure_board(self.board, self._lanes)
            self._configured = True

    def use_postgres_probe(self, probe: Probe) -> None:
        """Let the persistence layer supply a pool-based probe (`SELECT 1` on its pool)."""
        self._postgres = CachedProbe(probe)

    async def reader(self) -> BrokerLagReader:
        if self._reader is None:
            reader = BrokerLagReader(
                bootstrap_servers(self.settings.kafka_brokers),
                group_id(self.app),
                client_id=f"{self.settings.app_id}-observability",
                security=aiokafka_kwargs(self.settings),
            )
            await reader.start()
            self._reader = reader
        return self._reader

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.stop()
        await self._pg.close()

    async def _kafka_probe(self) -> None:
        await (await self.reader()).ping()

    # ---- readiness
    async def readiness(self) -> Readiness:
        recovery = table_recovery(self.app)
        active, _ = recovery_remaining(self.app)
        checks = {
            "recovery": recovery_check(
                completed=recovery.completed.is_set(),
                in_recovery=bool(recovery.in_recovery),
                rebalancing=bool(self.app.rebalancing),
                remaining=active,
            ),
            "kafka": await self._kafka.check(),
            "postgres": await self._postgres.check(),
            "control": control_check(self._control.is_caught_up()),
        }
        if self._reconciliation is not None:
            checks["reconciliation"] = self._reconciliation()
        result = Readiness(checks)
        self.last_readiness = result
        metrics.READY.set(1 if result.ready else 0)
        return result

    # ---- refresh
    async def refresh_guarded(self) -> None:
        """`refresh` for the monitor timer: a failed refresh keeps the last values."""
        try:
            await self.refresh()
        except Exception as exc:  # noqa: BLE001 - try again next tick
            logger.warning("observability refresh failed: %s: %s", type(exc).__name__, exc)

    async def refresh(self) -> None:
        """Monitor tick: lag from the broker for owned partitions, lanes, gauges."""
        self.configure_lanes()
        self.refresh_control_feed()  # first: needs no broker round trip, so never held back
        owned = owned_stream_partitions(self.app)
        reader = await self.reader()
        rows = await reader.read({tp.topic for tp in owned}, only=owned) if owned else []
        self.last_lag = rows
        metrics.consumer_lag_records.replace(((r.topic, str(r.partition)), r.lag) for r in rows)
        metrics.consumer_lag_seconds.replace(
            ((r.topic, str(r.partition)), r.lag_seconds) for r in rows
        )
        metrics.consumer_committed_offset.replace(
            ((r.topic, str(r.partition)), r.committed) for r in rows if r.committed is not None
        )
        metrics.OLDEST_UNPROCESSED_AGE.set(max((r.lag_seconds for r in rows), default=0.0))
        await self._place_lanes(reader, owned, rows)
        await self.readiness()
        self.refresh_gauges()

    async def _place_lanes(
        self, reader: BrokerLagReader, owned: set[TopicPartition], rows: list[PartitionLag]
    ) -> None:
        topics = self._account_topics
        counts = await reader.partition_counts(topics)
        by_tp = {(r.topic, r.partition): r for r in rows}
        running = agents_running(self.app, self.settings.decisions_topic)
        for lane in self.board.lanes():
            parts = lane_partitions(lane.account, counts)
            decisions_p = parts.get(self.settings.decisions_topic)
            owns = (
                None
                if decisions_p is None
                else TopicPartition(self.settings.decisions_topic, decisions_p) in owned
            )
            lane.set_placement(owned=owns, agent_running=running if owns else None)
            lane.set_lag([by_tp[(t, p)].as_dict() for t, p in parts.items() if (t, p) in by_tp])

    def refresh_control_feed(self) -> None:
        set_control_feed_gauges(self._control, self.settings.control_feed_stale_seconds)

    def refresh_gauges(self) -> None:
        """No-I/O refresh, also run at every scrape: control feed, recovery and lane gauges."""
        self.refresh_control_feed()
        try:
            active, standby = recovery_remaining(self.app)
        except Exception:  # noqa: BLE001 - tables not set up (e.g. not a worker)
            active, standby = 0, 0
        metrics.TABLE_RECOVERY_REMAINING.labels(kind="active").set(active)
        metrics.TABLE_RECOVERY_REMAINING.labels(kind="standby").set(standby)
        local = [lane for lane in self.board.lanes() if lane.enabled and lane.owned is not False]
        snapshot = [(lane.account, lane.snapshot()) for lane in local]
        metrics.lane_up.replace(((a,), 1.0 if s["up"] else 0.0) for a, s in snapshot)
        metrics.lane_healthy.replace(((a,), 1.0 if s["healthy"] else 0.0) for a, s in snapshot)
        metrics.kill_switch_engaged.replace(
            ((a,), 1.0 if s["kill_switch"]["engaged"] else 0.0) for a, s in snapshot
        )
        metrics.trading_state.replace(
            ((a, state), 1.0 if s["trading_state"].get("state") == state else 0.0)
            for a, s in snapshot
            for state in TRADING_STATES
        )

    def worker_info(self) -> dict[str, Any]:
        owned = owned_stream_partitions(self.app)
        try:
            active, standby = recovery_remaining(self.app)
            in_recovery = bool(table_recovery(self.app).in_recovery)
        except Exception:  # noqa: BLE001
            active, standby, in_recovery = 0, 0, False
        return {
            "app_id": self.settings.app_id,
            "group_id": group_id(self.app),
            "owned_partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in owned),
            "in_recovery": in_recovery,
            "rebalancing": bool(self.app.rebalancing),
            "recovery_remaining": {"active": active, "standby": standby},
            "ready": self.last_readiness.ready if self.last_readiness else None,
            "lag": [r.as_dict() for r in self.last_lag],
            "control_feed": control_feed_info(
                self._control, self.settings.control_feed_stale_seconds
            ),
        }
