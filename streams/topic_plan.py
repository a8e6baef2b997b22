"""The project's topics as they must be, and `check_topics`: what differs on a cluster.

Pure (no Kafka): `streams/cli/topics.py` builds the plan from the settings and the app's tables,
reads the cluster and prints what `check_topics` finds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: str  # "delete" or "compact"
    # Co-partitioned topics (keyed by account or symbol, read beside tables) must have exactly
    # `partitions`; the others at least one.
    copartitioned: bool
    # State topics (changelogs, retries, re-keyed updates, control) carry min.insync.replicas.
    state: bool
    extra_configs: Mapping[str, str] = field(default_factory=dict)

    def configs(self, min_insync_replicas: int) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy, **self.extra_configs}
        if self.state:
            configs["min.insync.replicas"] = str(min_insync_replicas)
        return configs


@dataclass(frozen=True)
class ClusterTopic:
    """A topic as the cluster describes it."""

    name: str
    replicas: Mapping[int, Sequence[int]]  # partition -> replica broker ids
    isr: Mapping[int, Sequence[int]]  # partition -> in-sync replica broker ids
    configs: Mapping[str, str]  # effective topic configs (cleanup.policy, min.insync.replicas)

    @property
    def partitions(self) -> int:
        return len(self.replicas)


def check_topics(
    specs: Sequence[TopicSpec],
    cluster: Mapping[str, ClusterTopic],
    *,
    replication_factor: int,
    min_insync_replicas: int,
) -> list[str]:
    """Every problem, one line each: missing, wrongly partitioned, under-replicated (too few
    replicas, or replicas out of sync), a wrong cleanup policy, a too low min.insync.replicas."""
    problems: list[str] = []
    for spec in specs:
        topic = cluster.get(spec.name)
        if topic is None:
            problems.append(f"{spec.name}: missing")
            continue
        if spec.copartitioned and topic.partitions != spec.partitions:
            problems.append(
                f"{spec.name}: {topic.partitions} partitions, want {spec.partitions} "
                "(co-partitioned with the tables and the decisions topic)"
            )
        rf = min((len(r) for r in topic.replicas.values()), default=0)
        if rf < replication_factor:
            problems.append(
                f"{spec.name}: under-replicated: replication factor {rf}, want {replication_factor}"
            )
        lagging = sorted(
            p for p, replicas in topic.replicas.items() if len(topic.isr.get(p, ())) < len(replicas)
        )
        if lagging:
            shown = ", ".join(str(p) for p in lagging[:8]) + (" ..." if len(lagging) > 8 else "")
            problems.append(
                f"{spec.name}: under-replicated: partitions {shown} have replicas out of sync"
            )
        policy = set(topic.configs.get("cleanup.policy", "delete").split(","))
        if spec.cleanup_policy == "compact" and "compact" not in policy:
            problems.append(
                f"{spec.name}: cleanup.policy={topic.configs.get('cleanup.policy', 'delete')}, "
                "want compact"
            )
        if spec.cleanup_policy == "delete" and "delete" not in policy:
            problems.append(
                f"{spec.name}: cleanup.policy={topic.configs.get('cleanup.policy')}, want delete"
            )
        if spec.state:
            want = min(min_insync_replicas, replication_factor)
            have = int(topic.configs.get("min.insync.replicas", "1"))
            if have < want:
                problems.append(f"{spec.name}: min.insync.replicas={have}, want {want}")
    return problems
