"""Every topic of the app, declared here (`declare_topics`, called once by `streams.app`).

Values travel as raw bytes and are decoded by the `schemas` codecs, so that a bad record becomes a
dead letter with its raw bytes instead of an exception inside faust.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from streams.settings import Settings


def account_updates_topic_name(settings: Settings) -> str:
    """Trade updates re-keyed by account_label (internal, co-partitioned with decisions)."""
    return f"{settings.app_id}-trade-updates-by-account"


def lane_retries_topic_name(settings: Settings) -> str:
    """Parked decisions re-driven by the lanes (internal, co-partitioned with decisions)."""
    return f"{settings.app_id}-lane-retries"


def trade_update_topic_names(settings: Settings) -> list[str]:
    """v1 and v2 topics that are set: v2 only is the Phase 4 cutover, v1 only the old world."""
    return [n for n in (settings.order_feed_topic, settings.order_feed_topic_v2) if n]


class RawBytes(faust.Schema[bytes, bytes]):
    """Keys and values as the bytes Kafka holds: what faust's `raw` serializer gives (`want_bytes`
    of bytes, None for None), without the serializer registry's codec lookups and the settings
    lookup of the event class for every record (faust's public `Schema` extension point). The
    signals topic's, with the signals stage's batches on (`TORGHUT_SIGNAL_BATCH_MAX`);
    `tests/unit/contracts/test_raw_schema.py`."""

    _events: tuple[Any, Any] = (None, None)  # (app, app.conf.Event), resolved once per app

    def loads_key(self, app: Any, message: Any, **_: Any) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, **_: Any) -> Any:
        return message.value

    def event_of(self, app: Any, message: Any) -> Any:
        """The event of a record, synchronously: what the compiled decode below gives (the lean
        drain loop, `compat.LeanNoSkipConsumer`, builds it with this, without a coroutine)."""
        of_app, event_class = self._events
        if of_app is not app:
            event_class = app.conf.Event
            self._events = (app, event_class)
        return event_class(app, message.key, message.value, message.headers, message)

    def compile(self, app: Any, **_: Any) -> Any:
        """The topic's decode: the event of the record's own key, value and headers, as faust's
        compiled decode gives it with these loads (nothing can fail to decode), without its
        per-record serializer calls and `app.conf.Event` settings lookup (resolved once)."""
        event_of = self.event_of

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return event_of(app, message)

        return decode


@dataclass(frozen=True)
class Topics:
    signals: faust.TopicT
    decisions: faust.TopicT
    dlq: faust.TopicT
    control: faust.TopicT
    # An account's decisions, re-driven decisions and trade updates share one partition, so
    # they are handled on the worker that runs the account's lane.
    lane_input: faust.TopicT  # decisions + re-driven decisions, read by the lanes agent
    lane_retries: faust.TopicT
    account_updates: faust.TopicT
    trade_updates: faust.TopicT | None  # v1 + v2, read together; None when neither is set

    def account_keyed(self) -> list[str]:
        """The co-partitioned topics whose partition decides which worker owns an account."""
        return [self.decisions.get_topic_name(), self.account_updates.get_topic_name()]


def declare_topics(app: faust.App, settings: Settings) -> Topics:
    def raw(*names: str, **kwargs: Any) -> faust.TopicT:
        return app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            **kwargs,
        )

    def signals(name: str, **kwargs: Any) -> faust.TopicT:
        if not settings.signal_batch_max:
            return raw(name, **kwargs)
        schema = RawBytes(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )
        return app.topic(name, schema=schema, **kwargs)

    partitions = settings.topic_partitions
    retries = lane_retries_topic_name(settings)
    feed = trade_update_topic_names(settings)
    return Topics(
        signals=signals(settings.signals_topic, partitions=partitions),
        decisions=raw(settings.decisions_topic, partitions=partitions),
        dlq=raw(settings.dlq_topic, partitions=partitions),
        control=raw(settings.control_topic, partitions=partitions, compacting=True),
        # internal=True declares the retry topic (an existing decisions topic is left as it is)
        lane_input=raw(settings.decisions_topic, retries, partitions=partitions, internal=True),
        lane_retries=raw(retries, partitions=partitions),
        account_updates=raw(
            account_updates_topic_name(settings), partitions=partitions, internal=True
        ),
        trade_updates=raw(*feed) if feed else None,
    )
