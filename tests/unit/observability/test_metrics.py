"""Metric helpers: stale series removal, broker call timing, exposition that parses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import REGISTRY, Gauge
from prometheus_client.parser import text_string_to_metric_families

from streams.observability import metrics

NAMED = {
    "torghut_signal_to_broker_ack_seconds",
    "torghut_broker_call_seconds",
    "torghut_broker_errors",
    "torghut_lane_up",
    "torghut_consumer_lag_records",
    "torghut_consumer_lag_seconds",
    "torghut_oldest_unprocessed_message_age_seconds",
    "torghut_table_recovery_remaining_records",
}


def test_labelled_gauge_replace_removes_vanished_series() -> None:
    gauge = Gauge("torghut_test_replace_records", "test", ["topic", "partition"])
    series = metrics.LabelledGauge(gauge)
    series.replace([(("t", "0"), 5.0), (("t", "1"), 2.0)])
    series.replace([(("t", "1"), 0.0)])
    samples = {s.labels["partition"]: s.value for s in gauge.collect()[0].samples}
    assert samples == {"1": 0.0}


def test_time_broker_call_observes_even_when_the_call_fails() -> None:
    labels = {"account": "acct-timing", "call": "submit_order"}
    before = REGISTRY.get_sample_value("torghut_broker_call_seconds_count", labels) or 0.0
    with metrics.time_broker_call("acct-timing", "submit_order"):
        pass
    try:
        with metrics.time_broker_call("acct-timing", "submit_order"):
            raise TimeoutError
    except TimeoutError:
        pass
    assert REGISTRY.get_sample_value("torghut_broker_call_seconds_count", labels) == before + 2


def test_signal_to_ack_clamps_negative_latency() -> None:
    at = datetime(2026, 3, 2, tzinfo=UTC)
    metrics.observe_signal_to_ack("acct-clamp", at, at - timedelta(seconds=1))
    labels = {"account": "acct-clamp", "le": "0.005"}
    assert REGISTRY.get_sample_value("torghut_signal_to_broker_ack_seconds_bucket", labels) == 1


def test_exposition_parses_and_carries_the_named_families() -> None:
    payload, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(payload.decode())}
    assert names >= NAMED
