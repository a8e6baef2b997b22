"""The Faust application: `faust -A streams.app worker | agents | tables | <command>`.

faust needs the app, its topics and its tables at import time (`-A streams.app`), so this module
parses the settings once and declares them; it holds nothing else. What a worker owns at run time
(pools, clients, state) is the `WorkerContext`, built once when the worker starts and reached
through `app.context`. Agents and timers live in `agents/`, tables in `tables/`; both are thin
wiring over the typed core in `streams/`.
"""

from __future__ import annotations

import gc
from typing import Any

import faust
from faust.tables import TableManager
from mode import BaseSignalT

from streams import compat
from streams.context import ConfigurationError, WorkerContext, exit_on_configuration_error
from streams.kafka_security import KafkaConfigError, check_connection_blocking, faust_kwargs
from streams.observability.logging import logging_config
from streams.settings import Settings, load_settings
from streams.state.restore import table_manager
from streams.topics import Topics, declare_topics
from tables import Tables, declare_tables


def state_topic_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of the state topics: a write is acknowledged once it is on this many
    replicas (`producer_acks=-1`), so a ledger entry survives the loss of a broker."""
    isr = min(settings.topic_min_insync_replicas, settings.topic_replication_factor)
    return {"min.insync.replicas": str(isr)}


class RecoveryFreeze:
    """`TORGHUT_GC_FREEZE`, second step: once the first table recovery has finished, what is
    alive (the consumer and its fetchers, the producer, the recovered tables, the agents'
    streams) lives as long as the worker too, and is frozen like the start-up objects.
    Later recoveries (rebalances) freeze nothing: a frozen object is never collected, and
    what a rebalance leaves behind may be garbage soon."""

    def __init__(self, enabled: bool) -> None:
        self.pending = enabled

    def recovered(self) -> bool:
        """Called after every recovery; True when this one froze."""
        if not self.pending:
            return False
        self.pending = False
        freeze_startup_objects()
        return True


class TorghutApp(faust.App):
    """faust's App with the settings it was built from and the worker context; every topic
    faust creates itself (changelogs, the lane retries, re-keyed trade updates: the `internal`
    ones) gets the state topic configs."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings.app_id, **faust_options(settings))
        self.settings = settings
        self.state_topic_configs = state_topic_configs(settings)
        self._context: WorkerContext | None = None
        self.recovery_freeze = RecoveryFreeze(settings.gc_freeze)

    def _new_transport(self) -> Any:
        """faust's transport with a consumer that never commits past an unprocessed record."""
        return compat.no_skip_transport(
            self,
            eager_delivery=self.settings.eager_delivery,
            lean_drain=self.settings.lean_drain,
        )

    def topic(self, *topics: str, **kwargs: Any) -> faust.TopicT:
        if kwargs.get("internal"):
            kwargs["config"] = {**self.state_topic_configs, **(kwargs.get("config") or {})}
        return super().topic(*topics, **kwargs)

    @property
    def context(self) -> WorkerContext:
        if self._context is None:
            raise RuntimeError("the worker context is built when the worker starts")
        return self._context

    @property
    def has_context(self) -> bool:
        return self._context is not None

    def build_context(self, topics: Topics, tables: Tables) -> WorkerContext:
        """Build the worker context (once; later calls return the same one)."""
        if self._context is None:
            self._context = WorkerContext(self, self.settings, topics, tables)
        return self._context


def faust_options(settings: Settings) -> dict[str, Any]:
    return {
        "broker": settings.kafka_brokers,
        "store": settings.store,
        "datadir": str(settings.data_path),
        "autodiscover": False,
        "web_enabled": settings.web_enabled,
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "topic_partitions": settings.topic_partitions,
        "topic_replication_factor": settings.topic_replication_factor,
        "table_standby_replicas": settings.table_standby_replicas,
        # Changelog restore in bulk ahead of faust's per-event recovery (issue 10, bench B5).
        "TableManager": (
            table_manager(
                settings.table_restore_processes,
                flush_stall=settings.fault_restore_flush_stall_seconds,
            )
            if settings.table_bulk_restore
            else TableManager
        ),
        "broker_session_timeout": settings.broker_session_timeout,
        "broker_heartbeat_interval": min(3.0, settings.broker_session_timeout / 3),
        "consumer_auto_offset_reset": "earliest",
        "processing_guarantee": "at_least_once",
        "producer_acks": -1,
        # Table recovery reads changelogs one fetch round at a time; with faust's 1 MiB per
        # partition a round holds ~570 ledger entries and restoring ran ~2x slower (bench B5).
        # Responses stay capped by the client's fetch_max_bytes (50 MiB).
        "consumer_max_fetch_size": 16 * 1024 * 1024,
        # Records are decoded by our own codecs (schemas/) so that a bad record becomes a
        # dead letter with its raw bytes instead of an exception inside faust.
        "key_serializer": "raw",
        "value_serializer": "raw",
        # Our own logging setup (JSON by default, secret redaction): streams.observability.logging.
        "loghandlers": [],
        "logging_config": logging_config(settings.log_format, settings.log_level),
        **faust_kwargs(settings),
    }


def create_app(settings: Settings) -> TorghutApp:
    return TorghutApp(settings)


settings = load_settings()
app = create_app(settings)
topics = declare_topics(app, settings)
tables = declare_tables(app, settings)


@app.on_worker_init.connect
def build_worker_context(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """The worker builds its context before it starts; a bad configuration (registry, strategy
    catalogue, live accounts on unreplicated state, Kafka settings that cannot connect) exits
    non-zero (78) with the problem named and no secret.

    faust fires this signal for every CLI command; only the worker builds here, so that
    `accounts --check` can print every problem itself."""
    if _is_worker_command():
        try:
            app.build_context(topics, tables)
            check_connection_blocking(settings)  # Kafka settings that cannot connect: say so
            tune_collector(settings)
        except KafkaConfigError as exc:
            exit_on_configuration_error(ConfigurationError(f"refusing to start: {exc}"))
        except ConfigurationError as exc:
            exit_on_configuration_error(exc)


def freeze_startup_objects() -> None:
    """Collect once, then move every object alive into the collector's permanent generation.

    What is alive once the worker context is built (imported modules, their classes and
    constants, the settings, the context) lives as long as the process; a full collection
    walked all of it again every few seconds of signal flow (~0.12 s each, bench B6). Frozen
    objects are still freed by reference counting; only a cycle among them that became garbage
    would stay (there is none to expect among start-up objects)."""
    gc.collect()
    gc.freeze()


def tune_collector(settings: Settings) -> None:
    """The worker's collector settings (`TORGHUT_GC_GEN0_THRESHOLD`, `TORGHUT_GC_FREEZE`)."""
    if settings.gc_gen0_threshold:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(settings.gc_gen0_threshold, gen1, gen2)
    if settings.gc_freeze:
        freeze_startup_objects()


@app.on_rebalance_complete.connect
async def freeze_after_first_recovery(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    if app.has_context:
        app.recovery_freeze.recovered()


def _is_worker_command() -> bool:
    import sys

    return "worker" in sys.argv[1:]


# Registration order matters only for readability of `faust agents` / `faust tables`.
import agents  # noqa: E402, F401
import streams.cli  # noqa: E402
import streams.web  # noqa: E402, F401


def main() -> None:
    """Console script `torghut-streams`: the same CLI as `faust -A streams.app`."""
    app.main()
