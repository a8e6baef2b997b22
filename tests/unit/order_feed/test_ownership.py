"""Account ownership follows the Kafka default partitioner of the account-label key."""

from __future__ import annotations

from aiokafka.partitioner import murmur2

from streams.ownership import owned_accounts, partition_for

LABELS = [f"acct-{i}" for i in range(40)]


def test_partition_matches_the_java_client_murmur2() -> None:
    for label in LABELS:
        expected = (murmur2(label.encode()) & 0x7FFFFFFF) % 8
        assert partition_for(label, 8) == expected


def test_every_account_has_exactly_one_owner_among_workers() -> None:
    workers = [{0, 3}, {1, 5, 6}, {2, 4, 7}]
    owners = [owned_accounts(LABELS, parts, 8) for parts in workers]
    flat = [label for owned in owners for label in owned]
    assert sorted(flat) == sorted(LABELS)


def test_no_assignment_owns_nothing() -> None:
    assert owned_accounts(LABELS, [], 8) == []
