"""Forwarder envelopes (the Kotlin forwarder's exact shape) and stream URLs."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from schemas.codecs import decode_trade_update
from streams.forwarder.envelope import SeqTracker, envelope, envelopes_for
from streams.forwarder.service import stream_url
from tests.unit.order_feed.helpers import data

T = datetime(2026, 3, 2, 15, 0, 1, 250000, tzinfo=UTC)


def test_seq_is_per_symbol_and_starts_at_one() -> None:
    seq = SeqTracker()
    assert [seq.next("AAPL"), seq.next("MSFT"), seq.next("AAPL")] == [1, 1, 2]


def test_v2_and_v1_records_of_one_event() -> None:
    d = data()
    records = envelopes_for(d, account_label="acct-a", seq=3, ingest_ts=T, emit_v1=True)
    assert [(v, k) for v, k, _ in records] == [(2, b"AAPL"), (1, b"AAPL")]
    v2, v1 = (json.loads(value) for _, _, value in records)
    assert v2 == {
        "ingestTs": "2026-03-02T15:00:01.250000Z",
        "eventTs": d["timestamp"],
        "feed": "alpaca",
        "channel": "trade_updates",
        "symbol": "AAPL",
        "seq": 3,
        "payload": {**d, "account_label": "acct-a"},
        "accountLabel": "acct-a",
        "isFinal": True,
        "source": "ws",
        "version": 2,
    }
    assert v1 == {**v2, "payload": d, "accountLabel": None, "version": 1}
    assert decode_trade_update(records[0][2]).declared_account_label == "acct-a"
    assert decode_trade_update(records[1][2]).declared_account_label is None


def test_v1_only_when_asked() -> None:
    records = envelopes_for(data(), account_label="a", seq=1, ingest_ts=T, emit_v1=False)
    assert [v for v, _, _ in records] == [2]


def test_missing_symbol_and_timestamp_fall_back_like_the_kotlin_forwarder() -> None:
    d = {"event": "new", "order": {"id": "x", "submitted_at": "2026-03-02T14:59:59Z"}}
    env = envelope(d, seq=1, ingest_ts=T, account_label=None, version=1)
    assert (env["symbol"], env["eventTs"]) == ("UNKNOWN", "2026-03-02T14:59:59Z")
    bare = envelope({"event": "new"}, seq=1, ingest_ts=T, account_label=None, version=1)
    assert bare["eventTs"] == "2026-03-02T15:00:01.250000Z"


def test_stream_url_follows_the_account_base_url() -> None:
    assert stream_url("https://paper-api.alpaca.markets") == "wss://paper-api.alpaca.markets/stream"
    assert stream_url("http://127.0.0.1:8123") == "ws://127.0.0.1:8123/stream"
    assert stream_url("http://127.0.0.1:8123/") == "ws://127.0.0.1:8123/stream"


def test_forwarder_targets_the_apps_account_updates_topic() -> None:
    from streams.app import settings, topics
    from streams.forwarder import runner

    assert runner.account_updates_topic_name(settings) == topics.account_updates.get_topic_name()


def test_either_trade_update_topic_may_be_unset() -> None:
    from streams.settings import Settings
    from streams.topics import trade_update_topic_names

    def names(v1: str, v2: str) -> list[str]:
        env = {"TRADING_ORDER_FEED_TOPIC": v1, "TRADING_ORDER_FEED_TOPIC_V2": v2}
        return trade_update_topic_names(Settings(**env))  # type: ignore[arg-type]

    assert names("t.v1", "t.v2") == ["t.v1", "t.v2"]
    assert names("", "t.v2") == ["t.v2"]  # Phase 4 cutover: v2 only
    assert names("t.v1", "") == ["t.v1"]
