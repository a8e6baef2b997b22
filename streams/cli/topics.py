"""`faust -A streams.app topics [--check]`: create the project's topics, or check them.

Topics get `TORGHUT_TOPIC_PARTITIONS` partitions and `TORGHUT_TOPIC_REPLICATION_FACTOR`
replicas; state topics (table changelogs, lane retries, re-keyed trade updates, the control
topic) also get `min.insync.replicas`. Changelogs and the control topic are compacted.
`--check` creates nothing and exits 1 naming every topic that is missing, wrongly partitioned,
under-replicated or wrongly configured.
"""

from __future__ import annotations

from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from faust.cli import AppCommand, option
from faust.tables import GlobalTable

from streams.app import app, settings
from streams.cli.accounts import InlineAppCommand
from streams.kafka_security import KafkaConfigError, aiokafka_kwargs, check_connection
from streams.ownership import bootstrap_servers
from streams.topic_plan import ClusterTopic, TopicSpec, check_topics
from streams.topics import account_updates_topic_name, lane_retries_topic_name

EXIT_PROBLEMS = 1
EXIT_CONFIG = 78


def topic_specs() -> list[TopicSpec]:
    """Every topic of the project with how it must look."""
    n = settings.topic_partitions

    def spec(name: str, policy: str, *, copartitioned: bool, state: bool) -> TopicSpec:
        extra = {"min.cleanable.dirty.ratio": "0.1"} if policy == "compact" else {}
        return TopicSpec(name, n, policy, copartitioned, state, extra)

    specs = [
        spec(settings.signals_topic, "delete", copartitioned=True, state=False),
        spec(settings.decisions_topic, "delete", copartitioned=True, state=False),
        spec(settings.dlq_topic, "delete", copartitioned=False, state=False),
        spec(settings.control_topic, "compact", copartitioned=False, state=True),
        # Internal topics the worker would declare itself; created here too so that the
        # forwarder's reconcile requests have somewhere to go before the first worker starts.
        spec(account_updates_topic_name(settings), "delete", copartitioned=True, state=True),
        spec(lane_retries_topic_name(settings), "delete", copartitioned=True, state=True),
    ]
    specs += [
        spec(name, "delete", copartitioned=False, state=False)
        for name in (settings.order_feed_topic, settings.order_feed_topic_v2)
        if name
    ]
    for table in app.tables.values():
        specs.append(
            spec(
                table.changelog_topic.get_topic_name(),
                "compact",
                copartitioned=not isinstance(table, GlobalTable),
                state=True,
            )
        )
    return specs


def project_topics() -> dict[str, dict[str, str]]:
    """Topic name → topic configs as `topics` creates them."""
    isr = min(settings.topic_min_insync_replicas, settings.topic_replication_factor)
    return {s.name: s.configs(isr) for s in topic_specs()}


async def describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, ClusterTopic]:
    """The named topics that exist, with replicas, in-sync replicas and effective configs."""
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    metadata = {t["topic"]: t for t in await admin.describe_topics(present)}
    configs: dict[str, dict[str, str]] = {n: {} for n in present}
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
    for response in await admin.describe_configs(resources):
        for resource in response.to_object()["resources"]:
            configs[resource["resource_name"]] = {
                c["config_names"]: c["config_value"]
                for c in resource["config_entries"]
                if c["config_value"] is not None
            }
    out: dict[str, ClusterTopic] = {}
    for name in present:
        parts = metadata[name]["partitions"]
        out[name] = ClusterTopic(
            name,
            replicas={p["partition"]: list(p["replicas"]) for p in parts},
            isr={p["partition"]: list(p["isr"]) for p in parts},
            configs=configs[name],
        )
    return out


@app.command(
    option(
        "--check",
        is_flag=True,
        default=False,
        help="Create nothing; exit 1 naming each topic that is missing, wrongly partitioned, "
        "under-replicated or wrongly configured.",
    ),
    base=InlineAppCommand,
)
async def topics(self: AppCommand, check: bool) -> int:
    """Create the project's topics (idempotent), or check them (`--check`)."""
    try:
        await check_connection(settings)
    except KafkaConfigError as exc:
        self.say(f"topics: {exc}", file=self.stderr)
        return EXIT_CONFIG
    specs = topic_specs()
    rf = settings.topic_replication_factor
    isr = min(settings.topic_min_insync_replicas, rf)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers), **aiokafka_kwargs(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        if check:
            cluster = await describe(admin, [s.name for s in specs])
            problems = check_topics(specs, cluster, replication_factor=rf, min_insync_replicas=isr)
            for problem in problems:
                self.say(f"PROBLEM: {problem}")
            if problems:
                self.say(f"topics check failed: {len(problems)} problem(s)", file=self.stderr)
                return EXIT_PROBLEMS
            self.say(f"ok: {len(specs)} topics, replication factor >= {rf}, co-partitioned")
            return 0
        missing: list[Any] = [
            NewTopic(s.name, s.partitions, rf, topic_configs=s.configs(isr))
            for s in specs
            if s.name not in existing
        ]
        if missing:
            await admin.create_topics(missing)
        for s in specs:
            self.say(f"{s.name}\t{'exists' if s.name in existing else 'created'}")
        return 0
    finally:
        await admin.close()
