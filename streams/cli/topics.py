"""`faust -A streams.app topics create`: the project's topics with the configured partitions."""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.app import app, settings
from streams.ownership import bootstrap_servers
from streams.topics import account_updates_topic_name, lane_retries_topic_name


def project_topics() -> dict[str, dict[str, str]]:
    """Topic name → topic configs. The control topic is compacted (latest command per key)."""
    topics: dict[str, dict[str, str]] = {
        settings.signals_topic: {"cleanup.policy": "delete"},
        settings.decisions_topic: {"cleanup.policy": "delete"},
        settings.dlq_topic: {"cleanup.policy": "delete"},
        settings.control_topic: {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"},
    }
    for name in (settings.order_feed_topic, settings.order_feed_topic_v2):
        if name:
            topics[name] = {"cleanup.policy": "delete"}
    # Internal topics the worker would declare itself; created here too so that the forwarder's
    # reconcile requests have somewhere to go before the first worker starts.
    for name in (account_updates_topic_name(settings), lane_retries_topic_name(settings)):
        topics[name] = {"cleanup.policy": "delete"}
    return topics


@app.command()
async def topics(self: Any) -> None:
    """Create the project's topics (idempotent); prints each topic and whether it was created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers(settings.kafka_brokers))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = project_topics()
        missing = [
            NewTopic(name, settings.topic_partitions, 1, topic_configs=configs)
            for name, configs in wanted.items()
            if name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        for name in wanted:
            state = "exists" if name in existing else "created"
            self.say(f"{name}\t{state}")
    finally:
        await admin.close()
