"""The worker context: everything a worker process owns, built once when it starts.

faust needs the app, its topics and its tables declared at import (`streams.app`); everything
else a worker holds — the Postgres pool, the broker clients, flags, the control book and feed, the
status board, TA freshness, the lanes, the signal pipeline, reconciliation and observability — is
built here, once, from settings parsed once and the account registry parsed once, and passed to
the agents, timers and web views explicitly (`app.context`). Nothing of it is a module global, so
every part of one worker sees the same accounts and the same state.

A CLI command that needs some of these builds its own pieces from `app.settings`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import faust

from schemas.codecs import encode_control
from schemas.control import ControlCommand, control_key
from streams.broker.pool import BrokerPool
from streams.clickhouse.worker import ClickHouseServices
from streams.compat import assigned_actives
from streams.dlq import DeadLetters
from streams.domain import secrets
from streams.domain.accounts import AccountConfigError, AccountRegistry, load_registry
from streams.domain.freshness import FreshnessState
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.pretrade import PretradeLimits
from streams.domain.strategy.catalog import build_runtime, load_catalog
from streams.domain.strategy.registry import StrategyConfigError
from streams.domain.trading_state import TradingStateBook
from streams.execution.control_feed import STALE as CONTROL_FEED_STALE
from streams.execution.control_feed import ControlFeed
from streams.execution.lane import utc_now
from streams.execution.orchestration import LanesRunner
from streams.execution.order_guard import ControlTopicTradingState, OrderGuard
from streams.execution.persist import ControlAudit, LaneSink
from streams.execution.price_feed import PriceFeed
from streams.execution.service import LaneService
from streams.flags.service import FlagService, build_flag_service, lane_labels
from streams.kafka_security import aiokafka_kwargs
from streams.observability.status import StatusBoard
from streams.observability.worker import LaneConfig, WorkerObservability
from streams.ownership import bootstrap_servers, owned_accounts, owned_partitions
from streams.persistence.dsn import database_dsn
from streams.persistence.shared import RepositoryProvider
from streams.reconciliation.feed import build_order_feed
from streams.reconciliation.positions import TradingStateSetter
from streams.reconciliation.service import ReconciliationService
from streams.reconciliation.startup import LaneGates, StartupReconciliation
from streams.settings import Settings
from streams.signal_decoder import SignalDecoder
from streams.signal_pipeline import SignalPipeline, log_pipeline
from tables.lane_cursors import FaustCursors
from tables.ledger import FaustLedger
from tables.order_index import FaustOrderIndex

if TYPE_CHECKING:
    from streams.topics import Topics
    from tables import Tables

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error


class ConfigurationError(Exception):
    """The worker cannot start with this configuration (the message names the problem)."""


def load_accounts(settings: Settings) -> AccountRegistry:
    """The registry; missing single-account credentials only disable that lane (`strict=False`),
    anything else (a live account without TRADING_LIVE_ENABLED, duplicate labels, bad JSON, live
    money on unreplicated state) is a `ConfigurationError` that lists every problem (never a
    secret)."""
    try:
        registry = load_registry(settings, strict=False)
    except AccountConfigError as exc:
        raise ConfigurationError(f"refusing to start: {exc}") from None
    problem = unreplicated_live_problem(settings, registry)
    if problem:
        raise ConfigurationError(f"refusing to start: {problem}")
    return registry


def unreplicated_live_problem(settings: Settings, registry: AccountRegistry) -> str | None:
    """Live money on one copy of the ledger (replication factor 1) needs an explicit override."""
    if settings.topic_replication_factor > 1 or settings.allow_unreplicated_state:
        return None
    live = [a.label for a in registry.enabled() if a.is_live]
    if not live:
        return None
    return (
        f"live account(s) {', '.join(live)} with TORGHUT_TOPIC_REPLICATION_FACTOR=1: the ledger "
        "written before each order would be one copy on one disk; use 3 (the default) or set "
        "TORGHUT_ALLOW_UNREPLICATED_STATE=true"
    )


def exit_on_configuration_error(exc: ConfigurationError) -> None:
    """Stop the process before it starts, with a clear message and no traceback."""
    log.critical("%s", exc)
    print(f"torghut-streams: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG) from None


class WorkerContext:
    def __init__(self, app: faust.App, settings: Settings, topics: Topics, tables: Tables) -> None:
        secrets.register_model(settings)  # scrubbed from logs and dead letters from now on
        self.app = app
        self.settings = settings
        self.topics = topics
        self.tables = tables
        self.registry = load_accounts(settings)
        self.board = StatusBoard(error_grace_seconds=settings.lane_error_grace_seconds)
        self.freshness = FreshnessState()
        self.freshness.configure(
            enabled=settings.ta_freshness_enabled,
            slo_seconds=settings.ta_freshness_slo_seconds,
            block_orders=settings.ta_freshness_block_orders,
        )
        self.repositories = RepositoryProvider(database_dsn(settings), settings.database_pool_size)
        self.brokers = BrokerPool(settings)
        enabled = [account.label for account in self.registry.enabled()]
        self.flags: FlagService = build_flag_service(settings, lane_labels(settings, enabled))
        self.dead_letters = DeadLetters.for_settings(topics.dlq, settings)
        self.control_book = KillSwitchBook()
        self.trading_states = TradingStateBook()
        self._latches: set[asyncio.Task[object]] = set()
        self.order_guard = OrderGuard(
            self.trading_states,
            PretradeLimits.from_settings(settings),
            latch=self._publish_latch,
            live_accounts=frozenset(a.label for a in self.registry.accounts if a.is_live),
            overrides={a.label: a.limits.overrides() for a in self.registry.accounts},
        )
        self.control_feed = ControlFeed(
            bootstrap_servers(settings.kafka_brokers),
            settings.control_topic,
            self.control_book,
            known_accounts=frozenset(self.registry.labels),
            dead_letters=self.dead_letters,
            client_id=f"{settings.app_id}-control",
            security=aiokafka_kwargs(settings),
            trading_states=self.trading_states,
        )
        self.clickhouse = ClickHouseServices(
            settings,
            self.freshness,
            dead_letters=self.dead_letters,
            repository=self.repositories.get,
            enabled_accounts=enabled,
        )
        # Lanes trade only once reconciled with the broker after a start or rebalance (#17).
        self.lane_gates = LaneGates(self.board, enabled=settings.startup_reconcile_enabled)
        # Sets an account `reducing` on a position drift (TORGHUT_POSITION_DRIFT_SET_REDUCING).
        # Until the trading-state control of issue #17 item 1 exists, this only logs.
        self.trading_state: TradingStateSetter = ControlTopicTradingState(
            self.trading_states, self._publish_latch
        )
        self.ledger = FaustLedger(tables.ledger, tables.ledger_slots)
        self.order_index = FaustOrderIndex(tables.order_index)
        self.signal_pipeline = self._signal_pipeline()
        self.signal_decoder = SignalDecoder.for_settings(settings)  # owns the registry cache
        self.price_feed: PriceFeed | None = None
        # The collar's reference prices, read on every worker (when any account has a collar).
        if self.order_guard.any_limit(lambda limits: limits.collar_bps > 0):
            self.price_feed = PriceFeed(
                bootstrap_servers(settings.kafka_brokers),
                settings.signals_topic,
                self.signal_decoder,
                self.order_guard,
                max_age_seconds=settings.price_reference_max_age_seconds,
                client_id=f"{settings.app_id}-prices",
                security=aiokafka_kwargs(settings),
            )
        self.lanes = self._lane_service()
        self.lanes_runner = LanesRunner(
            self.lanes,
            ledger=self.ledger,
            acks=tables.acks,
            control=self.control_feed,
            dead_letters=self.dead_letters,
            retries=topics.lane_retries,
            owned_accounts=lambda: set(self.owned_accounts()),
            reconcile_lanes=self._reconcile_lanes,
        )
        self.order_feed = build_order_feed(
            settings,
            self.registry,
            account_for=self.order_index.account_for,
            repositories=self.repositories,
            account_updates=topics.account_updates,
            dead_letters=self.dead_letters,
        )
        self.router = self.order_feed.router
        self.reconciliation = ReconciliationService(
            settings,
            self.registry,
            repositories=self.repositories,
            brokers=self.brokers,
            board=self.board,
            dead_letters=self.dead_letters,
            owned_accounts=self.owned_accounts,
            verified=self.lanes.verified,
            mismatched=self.lanes.mismatched,
            refresh_snapshot=self._refresh_snapshot,
            gates=self.lane_gates,
            trading_state=self.trading_state,
            windows=self.order_guard,
            observe_order=lambda update: self.order_guard.observe_order(update, utc_now()),
        )
        self.startup = StartupReconciliation(
            self.lane_gates,
            self.reconciliation.reconcile_at_start,
            timeout=settings.startup_reconcile_timeout_seconds,
            on_ready=self.lanes.release,
            backoff_cap=settings.startup_reconcile_retry_max_seconds,
        )
        self.observability = WorkerObservability(
            app,
            settings,
            self.board,
            lanes=[LaneConfig(a.label, str(a.mode), a.enabled) for a in self.registry.accounts],
            account_topics=topics.account_keyed(),
            control=self.control_feed,
            reconciliation=lambda: self.lane_gates.readiness(self.owned_accounts()),
        )
        self.observability.configure_lanes()

    def _signal_pipeline(self) -> SignalPipeline:
        try:
            catalog = load_catalog(self.settings)
            runtime = build_runtime(self.settings, catalog)
        except (StrategyConfigError, ValueError) as exc:
            raise ConfigurationError(f"invalid configuration: {exc}") from None
        flags = self.flags
        pipeline = SignalPipeline(
            runtime, self.registry.enabled(), lambda: flags.snapshot, self.settings.account_label
        )
        log_pipeline(pipeline)
        self._disabled_strategies = frozenset(c.id for c in catalog if not c.enabled)
        return pipeline

    def _lane_service(self) -> LaneService:
        flags = self.flags
        return LaneService(
            self.settings,
            self.registry,
            ledger=self.ledger,
            index=self.order_index,
            cursors=FaustCursors(self.tables.lane_cursors, self.settings.signal_source.value),
            sink=LaneSink(self.repositories),
            brokers=self.brokers,
            flags=lambda: flags.snapshot,
            book=self.control_book,
            board=self.board,
            disabled_strategies=self._disabled_strategies,
            ta_blocks_orders=self.freshness.blocks_orders,
            lane_refusals=self._lane_refusals,
            states=self.trading_states,
            audit=ControlAudit(self.repositories),
            guard=self.order_guard,
            lane_waits=self.lane_gates.waits,
        )

    async def run_price_feed(self) -> None:
        """Follow the TA signals for reference prices (a no-op with the price collar off)."""
        if self.price_feed is not None:
            await self.price_feed.run_forever()

    def _publish_latch(self, command: ControlCommand) -> None:
        """A throttle latch goes on the control topic (every worker, survives restarts); the
        guard has already applied it here."""
        task: asyncio.Task[object] = asyncio.ensure_future(self._send_control(command))
        self._latches.add(task)
        task.add_done_callback(self._latches.discard)

    async def _send_control(self, command: ControlCommand) -> object:
        try:
            return await self.topics.control.send(
                key=control_key(command), value=encode_control(command)
            )
        except Exception:  # the halt holds here; logged for the operator
            log.exception("throttle latch not published on the control topic")
            return None

    def _reconcile_lanes(self, owned: set[str], resumed: bool) -> None:
        """Start-up reconciliation of the owned lanes (every lanes upkeep tick)."""
        self.startup.upkeep(owned, [a.label for a in self.registry.enabled()], resumed)

    def _lane_refusals(self, label: str) -> list[str]:
        """Refusals of every lane at the last moment: a stalled control feed (and, once it
        exists, the trading state of issue #17)."""
        stale = self.control_feed.stale_for()
        if stale is not None and stale > self.settings.control_feed_stale_seconds:
            return [CONTROL_FEED_STALE]
        return []

    async def _refresh_snapshot(self, label: str) -> None:
        """The reconciler refreshes a snapshot through the lanes (one request budget)."""
        await self.lanes.refresh_snapshots([label])

    # ---- ownership
    def owned_accounts(self) -> list[str]:
        """Enabled accounts whose partition of the account-keyed topics this worker holds."""
        assigned = {(tp.topic, tp.partition) for tp in assigned_actives(self.app)}
        partitions = owned_partitions(assigned, self.topics.account_keyed())
        labels = [account.label for account in self.registry.enabled()]
        return owned_accounts(labels, partitions, self.settings.topic_partitions)

    # ---- shutdown
    async def close(self) -> None:
        """Release what the worker holds, each part even if another fails."""
        closers: list[Callable[[], object]] = [
            self.startup.close,
            self.reconciliation.close,
            self.lanes_runner.close,
            self.repositories.close,
            self.observability.close,
            self.clickhouse.close,
            self.signal_decoder.close,
        ]
        for close in closers:
            try:
                result = close()
                if hasattr(result, "__await__"):
                    await result  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                log.warning("closing %s failed: %s", close, type(exc).__name__)
        await self.brokers.close()
