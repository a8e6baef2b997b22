"""Signals, expected decisions and topic reading for the signals-agent integration tests."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from prometheus_client.parser import text_string_to_metric_families

from schemas.codecs import encode_ta_signal_avro, encode_ta_signal_json
from schemas.ta_signal import TaSignal
from streams.domain.fanout import fan_out
from streams.domain.strategy.catalog import build_runtime
from streams.settings import Settings
from tests.support.worker import Worker

T = TypeVar("T")
T0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
BROKER_URL = "http://127.0.0.1:9"  # nothing listens: no lane may reach a real broker

# Feature shapes at price ~100 against the default catalogue (momentum + VWAP reversion) with
# the legacy fallback: a momentum buy, a VWAP sell, both at once (a conflict the buyer wins), a
# quiet signal, and one only the legacy rule acts on.
SHAPES: tuple[dict[str, Any], ...] = (
    {"price": 100.0, "macd": (0.3, 0.1), "rsi": 60.0, "ema": (101.0, 100.0)},
    {"price": 100.5, "macd": (0.1, 0.1), "rsi": 66.0, "ema": (100.0, 100.0)},
    {"price": 100.5, "macd": (0.3, 0.1), "rsi": 66.0, "ema": (101.0, 100.0)},
    {"price": 100.0, "macd": (0.1, 0.1), "rsi": 50.0, "ema": (100.0, 100.0)},
    {"price": 100.0, "macd": (0.3, 0.1), "rsi": 30.0, "ema": (100.0, 100.0)},
)


def signal(symbol: str, seq: int, shape: Mapping[str, Any], at: datetime | None = None) -> TaSignal:
    event_ts = at or T0 + timedelta(seconds=seq)
    macd, ema = shape["macd"], shape["ema"]
    return TaSignal.model_validate(
        {
            "ingest_ts": event_ts + timedelta(milliseconds=25),
            "event_ts": event_ts,
            "symbol": symbol,
            "seq": seq,
            "is_final": True,
            "window": {"size": "PT1S"},
            "macd": {"macd": macd[0], "signal": macd[1], "hist": macd[0] - macd[1]},
            "ema": {"ema12": ema[0], "ema26": ema[1]},
            "rsi14": shape["rsi"],
            "vwap": {"session": 100.0},
            # The Avro record has no trade price: the quote mid carries it.
            "imbalance": {
                "spread": 0.02,
                "bid_px": shape["price"] - 0.01,
                "ask_px": shape["price"] + 0.01,
                "bid_sz": 100.0,
                "ask_sz": 100.0,
            },
        }
    )


def avro_record(sig: TaSignal) -> tuple[bytes, bytes]:
    return sig.symbol.encode(), encode_ta_signal_avro(sig)


def json_record(sig: TaSignal) -> tuple[bytes, bytes]:
    return sig.symbol.encode(), encode_ta_signal_json(sig)


def expected_hashes(
    signals: Sequence[TaSignal], lanes: Sequence[str], strategy_env: Mapping[str, str]
) -> list[tuple[str, str]]:
    """(account, decision hash) the pure domain core gives for these signals, in order."""
    runtime = build_runtime(Settings(**strategy_env))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    return [
        (d.account_label, d.decision_hash)
        for sig in signals
        for d in fan_out(runtime.evaluate(sig).intents, lanes, sig, now)
    ]


def account(label: str, *, enabled: bool = True) -> dict[str, Any]:
    return {
        "label": label,
        "mode": "paper",
        "api_key": f"key-{label}",
        "secret_key": f"secret-{label}",
        "base_url": BROKER_URL,
        "enabled": enabled,
    }


def accounts_json(*entries: dict[str, Any]) -> str:
    return json.dumps({"accounts": list(entries)})


async def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout: float = 60.0, settle: float = 0.0
) -> list[Any]:
    """Every record of `topic` from the beginning, once `expect` arrived (+ `settle` s more).

    A group-less subscription: the consumer takes all partitions as soon as it learns them, and
    commits nothing. `settle` keeps reading a while to catch records that should *not* come.
    """
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline, settled_at = loop.time() + timeout, None
        out: list[Any] = []
        while loop.time() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                out.extend(batch)
            if len(out) >= expect:
                settled_at = settled_at or loop.time() + settle
                if loop.time() >= settled_at:
                    break
        return out
    finally:
        await consumer.stop()


async def committed_and_end(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, tuple[int, int]]:
    """partition → (the group's committed offset, -1 for none; the end offset)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: (committed[tp].offset if tp in committed else -1, ends[tp]) for tp in tps}


def murmur2_partition(key: bytes, partitions: int) -> int:
    everything = list(range(partitions))
    return int(DefaultPartitioner()(key, everything, everything))


def decoded(records: Sequence[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.value) for r in records]


def until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def metric_samples(worker: Worker, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one metric family at the worker's `/metrics`, keyed by sorted labels."""
    text = worker.get("/metrics").text
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def metric(worker: Worker, name: str, **labels: str) -> float:
    return metric_samples(worker, name).get(tuple(sorted(labels.items())), 0.0)
