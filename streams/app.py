"""The Faust application: `faust -A streams.app worker | agents | tables | <command>`.

The app object is created from settings; agents and tables are imported afterwards so that their
decorators register on it. Agents and timers live in `agents/`, tables in `tables/`; both are thin
wiring over the typed domain core in `streams/`.
"""

from __future__ import annotations

import faust
from faust.tables import TableManager

from streams.observability.logging import logging_config
from streams.settings import Settings, get_settings
from streams.state.restore import table_manager


def create_app(settings: Settings) -> faust.App:
    return faust.App(
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
        topic_replication_factor=1,
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
    )


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
