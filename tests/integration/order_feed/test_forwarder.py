"""The trade-updates forwarder: simulator websocket (alpaca-py TradingStream) → real Kafka."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.codecs import decode_trade_update
from simulator.testing import RunningSimulator
from streams.domain.accounts import Account, AccountMode
from streams.domain.trade_updates.model import ReconcileRequest, decode_record
from streams.forwarder.service import ForwarderTopics, TradeUpdatesForwarder
from tests.integration.order_feed.kafka_read import read_topic
from tests.integration.order_feed.test_reconciler import ACCOUNTS, submit
from tests.support.kafka import create_topics
from tests.support.stack import ROOT, StackInfo, unique

pytestmark = pytest.mark.integration

ENVELOPE_KEYS = {
    "ingestTs",
    "eventTs",
    "feed",
    "channel",
    "symbol",
    "seq",
    "payload",
    "accountLabel",
    "isFinal",
    "source",
    "version",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with RunningSimulator({"accounts": ACCOUNTS}, seed=5) as running:
        yield running


def accounts(sim: RunningSimulator) -> list[Account]:
    return [
        Account(
            label=a["label"],
            mode=AccountMode.paper,
            api_key=SecretStr(a["key"]),
            secret_key=SecretStr(a["secret"]),
            base_url=sim.url,
        )
        for a in ACCOUNTS
    ]


@pytest.fixture
async def topics(stack: StackInfo) -> ForwarderTopics:
    uid = unique("fwd")
    names = ForwarderTopics(v2=f"{uid}.v2", v1=f"{uid}.v1", reconcile=f"{uid}.by-account")
    await create_topics(stack.bootstrap, [names.v2, names.v1, names.reconcile], partitions=4)  # type: ignore[list-item]
    return names


@pytest.fixture
async def forwarder(
    sim: RunningSimulator, stack: StackInfo, topics: ForwarderTopics
) -> AsyncIterator[TradeUpdatesForwarder]:
    fwd = TradeUpdatesForwarder(accounts(sim), stack.bootstrap, topics)
    stop = asyncio.Event()
    task = asyncio.create_task(fwd.run(stop))
    for label in ("acct-a", "acct-b"):
        await asyncio.to_thread(sim.admin.wait_listening, label, 1, 20.0)
    yield fwd
    stop.set()
    await asyncio.wait_for(task, 15)


async def records(stack: StackInfo, topic: str | None, expect: int) -> list[Any]:
    assert topic is not None
    return await read_topic(stack.bootstrap, topic, expect=expect)


async def test_envelopes_match_the_kotlin_forwarder_and_reconnects_ask_for_reconcile(
    sim: RunningSimulator, stack: StackInfo, topics: ForwarderTopics, forwarder: Any
) -> None:
    before = {x: len(await asyncio.to_thread(sim.admin.events, x)) for x in ("acct-a", "acct-b")}
    for label, n in (("acct-a", 1), ("acct-a", 2), ("acct-b", 3)):
        await asyncio.to_thread(submit, sim, label, n)
    orders = {"acct-a": 2, "acct-b": 1}
    produced = {
        x: (await asyncio.to_thread(sim.admin.wait_for_events, x, before[x] + 2 * n, 10.0))[
            before[x] :
        ]
        for x, n in orders.items()
    }
    total = sum(len(v) for v in produced.values())
    assert total >= 6  # at least new + fill per order

    v2 = await records(stack, topics.v2, total)
    v1 = await records(stack, topics.v1, total)
    assert len(v2) == len(v1) == total
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for record in sorted(v2, key=lambda r: (r.partition, r.offset)):
        env = json.loads(record.value)
        assert set(env) == ENVELOPE_KEYS
        label = env["accountLabel"]
        assert env["payload"]["account_label"] == label
        assert (env["version"], env["feed"], env["channel"], env["source"], env["isFinal"]) == (
            2,
            "alpaca",
            "trade_updates",
            "ws",
            True,
        )
        assert record.key == env["symbol"].encode() == b"AAPL"
        assert env["eventTs"] == env["payload"]["timestamp"]
        seqs[(label, env["symbol"])].append(env["seq"])
        parsed = decode_trade_update(record.value)  # the contract the order feed reads
        assert parsed.account_label == label
    for values in seqs.values():
        assert sorted(values) == list(range(1, len(values) + 1))
    for record in v1:
        env = json.loads(record.value)
        assert (env["accountLabel"], env["version"]) == (None, 1)
        assert "account_label" not in env["payload"]
    stream_payloads = sorted(
        json.dumps(e["data"], sort_keys=True) for v in produced.values() for e in v
    )
    forwarded = sorted(json.dumps(json.loads(r.value)["payload"], sort_keys=True) for r in v1)
    assert forwarded == stream_payloads  # Alpaca's data verbatim

    requests = await records(stack, topics.reconcile, 2)
    first = [decode_record(r.value) for r in requests]
    assert sorted(r.account_label for r in first if isinstance(r, ReconcileRequest)) == [
        "acct-a",
        "acct-b",
    ]
    assert all(r.key == r_.account_label.encode() for r, r_ in zip(requests, first, strict=True))

    await asyncio.to_thread(sim.admin.disconnect, "acct-a")
    await asyncio.to_thread(sim.admin.wait_listening, "acct-a", 1, 20.0)
    after = await records(stack, topics.reconcile, 3)
    labels = sorted(decode_record(r.value).account_label for r in after)
    assert labels == ["acct-a", "acct-a", "acct-b"]


async def test_forwarder_command_runs_alone_and_stops_on_sigterm(
    sim: RunningSimulator, stack: StackInfo, topics: ForwarderTopics
) -> None:
    env = {
        **os.environ,
        "KAFKA_BROKERS": stack.kafka_brokers,
        "TORGHUT_APP_ID": "fwd-cli",
        "TRADING_ORDER_FEED_TOPIC": str(topics.v1),
        "TRADING_ORDER_FEED_TOPIC_V2": str(topics.v2),
        "TORGHUT_FORWARDER_EMIT_V1": "false",
        "TORGHUT_FORWARDER_ACCOUNTS": "acct-b",
        "TRADING_MULTI_ACCOUNT_ENABLED": "true",
        "TRADING_ACCOUNTS_JSON": json.dumps(
            [
                {
                    "label": a["label"],
                    "api_key": a["key"],
                    "secret_key": a["secret"],
                    "base_url": sim.url,
                }
                for a in ACCOUNTS
            ]
        ),
        "TORGHUT_LOG_FORMAT": "text",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams.forwarder"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        await asyncio.to_thread(sim.admin.wait_listening, "acct-b", 1, 30.0)
        assert (await asyncio.to_thread(sim.admin.connections, "acct-a"))["listening"] == 0
        await asyncio.to_thread(submit, sim, "acct-b", 41)
        v2 = await records(stack, topics.v2, 2)
        assert {json.loads(r.value)["accountLabel"] for r in v2} == {"acct-b"}
        assert await read_topic(stack.bootstrap, str(topics.v1), expect=1, timeout=1) == []
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(proc.communicate, None, 20)
    assert proc.returncode == 0, output
    assert "AKB" not in output and "SB" not in output.split()  # no secret in the logs
    listed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "faust", "-A", "streams.app", "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "forwarder" in listed.stdout  # also `faust -A streams.app forwarder`
