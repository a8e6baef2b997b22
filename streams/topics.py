"""Topic handles of the app. Values travel as raw bytes and are decoded by `schemas` codecs."""

from __future__ import annotations

from typing import Any

import faust

from streams.app import app, settings


def raw_topic(name: str, **kwargs: Any) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.topic_partitions,
        **kwargs,
    )


signals_topic = raw_topic(settings.signals_topic)
decisions_topic = raw_topic(settings.decisions_topic)
dlq_topic = raw_topic(settings.dlq_topic)
control_topic = raw_topic(settings.control_topic, compacting=True)
# Trade updates re-keyed by account_label, co-partitioned with the decisions topic so that an
# account's updates are applied on the worker that runs the account's lane.
ACCOUNT_UPDATES_TOPIC = f"{settings.app_id}-trade-updates-by-account"
LANE_RETRIES_TOPIC = f"{settings.app_id}-lane-retries"
account_updates_topic = raw_topic(ACCOUNT_UPDATES_TOPIC, internal=True)


def order_feed_topics() -> list[faust.TopicT]:
    """v1 and v2 trade-update topics; either may be unset (v2-only is the Phase 4 cutover)."""
    names = [n for n in (settings.order_feed_topic, settings.order_feed_topic_v2) if n]
    return [raw_topic(n) for n in names]
