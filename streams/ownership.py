"""Who owns what: Kafka addresses, the key → partition function, and this worker's accounts.

Decisions, re-driven decisions and re-keyed trade updates are keyed by `account_label` and
co-partitioned, and partitioned by the Kafka default partitioner (murmur2 of the key), the one
faust's producer and the forwarder's aiokafka producer use. An account is owned by the worker
assigned the account's partition of the decisions topic: that worker runs the account's lane,
refreshes its snapshot and reconciles it. Every part of the app asks this module, so lanes, the
reconciler, status and the CLI can never disagree about an owner.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from aiokafka.partitioner import murmur2


def bootstrap_servers(kafka_brokers: str) -> str:
    """`kafka://h1:p;h2:p` (faust form) → `h1:p,h2:p` (aiokafka form)."""
    hosts = [h.strip().removeprefix("kafka://") for h in kafka_brokers.replace(",", ";").split(";")]
    return ",".join(h for h in hosts if h)


def partition_for(key: bytes | str, partitions: int) -> int:
    """The partition the default (Java-compatible murmur2) partitioner picks for `key`."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    raw = key.encode("utf-8") if isinstance(key, str) else key
    return int(murmur2(raw) & 0x7FFFFFFF) % partitions


def owned_accounts(
    labels: Iterable[str], assigned_partitions: Iterable[int], partitions: int
) -> list[str]:
    """The labels whose partition is among `assigned_partitions`, in the given order."""
    assigned = set(assigned_partitions)
    return [label for label in labels if partition_for(label, partitions) in assigned]


def owned_partitions(assigned: Iterable[tuple[str, int]], topics: Iterable[str]) -> set[int]:
    """Partitions of the account-keyed `topics` among the `(topic, partition)` pairs assigned."""
    wanted = set(topics)
    return {partition for topic, partition in assigned if topic in wanted}


def lane_partitions(account: str, topics: Mapping[str, int]) -> dict[str, int]:
    """The partition of each account-keyed topic (`{topic: partition count}`) for `account`."""
    return {topic: partition_for(account, n) for topic, n in topics.items() if n > 0}
