"""Which worker owns an account: the one assigned the account's partition of the decisions topic.

Decisions (and re-keyed trade updates, co-partitioned with them) are keyed by `account_label`
and partitioned by the Kafka default partitioner (murmur2 of the key), the same one faust's
producer and the forwarder's aiokafka producer use. A worker reconciles exactly the accounts
whose partition it holds, so each account is reconciled by one worker, the one running its lane.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka.partitioner import DefaultPartitioner


def partition_for(account_label: str, partitions: int) -> int:
    """The partition of `account_label`'s key among `partitions` (aiokafka's own code path)."""
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    all_partitions = list(range(partitions))
    return int(DefaultPartitioner()(account_label.encode("utf-8"), all_partitions, all_partitions))


def owned_accounts(
    labels: Iterable[str], assigned_partitions: Iterable[int], partitions: int
) -> list[str]:
    """The labels whose partition is among `assigned_partitions`, in the given order."""
    assigned = set(assigned_partitions)
    return [label for label in labels if partition_for(label, partitions) in assigned]
