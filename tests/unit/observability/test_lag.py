"""Lag arithmetic and the default partitioner used to place account lanes."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka.partitioner import DefaultPartitioner

from streams.observability.lag import PartitionLag, lag_records, lag_seconds
from streams.ownership import bootstrap_servers, partition_for

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)


def test_lag_counts_from_committed_or_log_start() -> None:
    assert lag_records(committed=40, earliest=0, end=50) == 10
    assert lag_records(committed=None, earliest=5, end=50) == 45
    # Retention deleted records past the committed offset: they can no longer be processed.
    assert lag_records(committed=3, earliest=10, end=50) == 40
    assert lag_records(committed=50, earliest=0, end=50) == 0


def test_lag_seconds_is_the_age_of_the_next_record() -> None:
    ts_ms = int(NOW.timestamp() * 1000) - 7_500
    assert lag_seconds(ts_ms, lag=3, now=NOW) == 7.5
    assert lag_seconds(ts_ms, lag=0, now=NOW) == 0.0
    assert lag_seconds(None, lag=3, now=NOW) == 0.0
    # A producer clock ahead of ours never yields a negative age.
    assert lag_seconds(ts_ms + 60_000, lag=1, now=NOW) == 0.0


def test_partition_for_key_is_the_producers_choice() -> None:
    """Lanes are placed where faust's (aiokafka's) default partitioner sends the account key."""
    partitions = list(range(8))
    for i in range(50):
        key = f"acct-{i}".encode()
        assert partition_for(key, 8) == DefaultPartitioner()(key, partitions, partitions)
    assert {partition_for(f"acct-{i}".encode(), 4) for i in range(40)} == {0, 1, 2, 3}


def test_bootstrap_servers_accepts_the_faust_form() -> None:
    assert bootstrap_servers("kafka://h1:9092;h2:9093") == "h1:9092,h2:9093"
    assert bootstrap_servers("127.0.0.1:9092") == "127.0.0.1:9092"


def test_partition_lag_as_dict() -> None:
    row = PartitionLag("t", 2, None, 10, 10, 1.5)
    assert row.as_dict() == {
        "topic": "t",
        "partition": 2,
        "committed": None,
        "end": 10,
        "lag": 10,
        "lag_seconds": 1.5,
    }
