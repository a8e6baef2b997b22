"""Build the forwarder from settings: which accounts, which topics, which Kafka."""

from __future__ import annotations

import asyncio

from streams.domain.accounts import Account, load_registry
from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder
from streams.kafka_security import aiokafka_kwargs
from streams.ownership import bootstrap_servers
from streams.settings import Settings
from streams.topics import account_updates_topic_name


def forwarded_accounts(settings: Settings) -> list[Account]:
    """Enabled accounts, narrowed to `TORGHUT_FORWARDER_ACCOUNTS` when set."""
    enabled = list(load_registry(settings).enabled())
    wanted = {s.strip() for s in settings.forwarder_accounts.split(",") if s.strip()}
    if not wanted:
        return enabled
    unknown = wanted - {a.label for a in enabled}
    if unknown:
        raise ValueError(f"TORGHUT_FORWARDER_ACCOUNTS: not enabled accounts: {sorted(unknown)}")
    return [a for a in enabled if a.label in wanted]


def build_forwarder(
    settings: Settings, reconcile_topic: str | None = None
) -> TradeUpdatesForwarder:
    topics = ForwarderTopics(
        v2=settings.order_feed_topic_v2 or None,
        v1=(settings.order_feed_topic or None) if settings.forwarder_emit_v1 else None,
        reconcile=reconcile_topic,
    )
    return TradeUpdatesForwarder(
        forwarded_accounts(settings),
        bootstrap_servers(settings.kafka_brokers),
        topics,
        aiokafka_kwargs(settings),
    )


async def forward_until_stopped(
    settings: Settings, stop: asyncio.Event, reconcile_topic: str | None = None
) -> None:
    topic = reconcile_topic or account_updates_topic_name(settings)
    await build_forwarder(settings, topic).run(stop)
