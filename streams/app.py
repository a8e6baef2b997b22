"""The Faust application: `faust -A streams.app worker | agents | tables | <command>`.

The app object is created from settings; agents and tables are imported afterwards so that their
decorators register on it. Agents and timers live in `agents/`, tables in `tables/`; both are thin
wiring over the typed domain core in `streams/`.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.tables import TableManager

from streams.kafka_security import faust_kwargs
from streams.observability.logging import logging_config
from streams.settings import Settings, get_settings
from streams.state.restore import table_manager


def state_topic_configs(settings: Settings) -> dict[str, str]:
    """Topic configs of the state topics: a write is acknowledged once it is on this many
    replicas (`producer_acks=-1`), so a ledger entry survives the loss of a broker."""
    isr = min(settings.topic_min_insync_replicas, settings.topic_replication_factor)
    return {"min.insync.replicas": str(isr)}


class App(faust.App):  # type: ignore[misc]  # faust is untyped
    """faust's App; every topic faust creates itself (changelogs, the lane retries, re-keyed
    trade updates: the `internal` ones) gets the state topic configs."""

    state_topic_configs: dict[str, str] = {}

    def topic(self, *topics: str, **kwargs: Any) -> faust.TopicT:
        if kwargs.get("internal"):
            kwargs["config"] = {**self.state_topic_configs, **(kwargs.get("config") or {})}
        return super().topic(*topics, **kwargs)


def create_app(settings: Settings) -> App:
    app = App(
        settings.app_id,
        broker=settings.kafka_brokers,
        store=settings.store,
        datadir=str(settings.data_path),
        autodiscover=False,
        web_enabled=settings.web_enabled,
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_bind=settings.web_host,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication_factor,
        table_standby_replicas=settings.table_standby_replicas,
        # Changelog restore in bulk ahead of faust's per-event recovery (issue 10, bench B5).
        TableManager=(
            table_manager(settings.table_restore_processes)
            if settings.table_bulk_restore
            else TableManager
        ),
        broker_session_timeout=settings.broker_session_timeout,
        broker_heartbeat_interval=min(3.0, settings.broker_session_timeout / 3),
        consumer_auto_offset_reset="earliest",
        processing_guarantee="at_least_once",
        producer_acks=-1,
        # Table recovery reads changelogs one fetch round at a time; with faust's 1 MiB per
        # partition a round holds ~570 ledger entries and restoring ran ~2x slower (bench B5).
        # Responses stay capped by the client's fetch_max_bytes (50 MiB).
        consumer_max_fetch_size=16 * 1024 * 1024,
        # Records are decoded by our own codecs (schemas/) so that a bad record becomes a
        # dead letter with its raw bytes instead of an exception inside faust.
        key_serializer="raw",
        value_serializer="raw",
        # Our own logging setup (JSON by default, secret redaction): streams.observability.logging.
        loghandlers=[],
        logging_config=logging_config(settings.log_format, settings.log_level),
        **faust_kwargs(settings),
    )
    app.state_topic_configs = state_topic_configs(settings)
    return app


settings = get_settings()
app = create_app(settings)

# Registration order matters only for readability of `faust agents` / `faust tables`.
import agents  # noqa: E402, F401
import streams.cli  # noqa: E402
import streams.web  # noqa: E402, F401
import tables  # noqa: E402, F401


def main() -> None:
    """Console script `torghut-streams`: the same CLI as `faust -A streams.app`."""
    app.main()
