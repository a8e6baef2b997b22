"""The `signals` agent against the real broker: Avro/JSON signals in, account decisions out."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import pytest

from schemas.codecs import decode_dead_letter, decode_decision
from tests.integration.signals.helpers import (
    SHAPES,
    account,
    accounts_json,
    avro_record,
    committed_and_end,
    expected_hashes,
    json_record,
    metric,
    murmur2_partition,
    read_topic,
    signal,
    until,
)
from tests.support.kafka import create_topics, produce
from tests.support.stack import StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

PARTITIONS = 4
STRATEGY_ENV = {"TRADING_STRATEGY_RUNTIME_MODE": "plugin_v3"}
SYMBOLS = ("AAPL", "MSFT", "BTC/USD")
LANES = ("acct-a", "acct-b")
CORRUPT = b"\x02\x00 this is not an Avro TaSignal"


def worker_env(tag: str, flags_file: Path, **extra: str) -> dict[str, str]:
    return app_env(
        tag,
        TORGHUT_TOPIC_PARTITIONS=str(PARTITIONS),
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=accounts_json(
            account("acct-a"),
            account("acct-b"),
            account("acct-c"),  # enabled in the registry, trading disabled by its lane flag
            account("acct-d", enabled=False),
        ),
        TRADING_ACCOUNT_LABEL="acct-a",
        TRADING_FLAGS_FILE=str(flags_file),
        TRADING_FLAGS_REFRESH_SECONDS="1",
        **STRATEGY_ENV,
        **extra,
    )


async def test_signals_fan_out_to_enabled_accounts_keyed_and_replayable(
    stack: StackInfo, tmp_path: Path, workers: list[Worker]
) -> None:
    flags_file = tmp_path / "flags.yaml"
    flags_file.write_text('"torghut:acct-c": {torghut_trading_enabled: false}\n')
    env = worker_env("sig", flags_file)
    # An independent replay: its own group, table and decisions topic, the same signals topic;
    # one signal at a time (TORGHUT_SIGNAL_BATCH_MAX=0) where the main worker takes batches.
    replay_env = worker_env(
        "sig-replay",
        flags_file,
        TORGHUT_SIGNALS_TOPIC=env["TORGHUT_SIGNALS_TOPIC"],
        TORGHUT_SIGNAL_BATCH_MAX="0",
    )
    topics = [*app_topics(env), *app_topics(replay_env)]
    await create_topics(stack.bootstrap, set(topics), partitions=PARTITIONS)
    main = Worker(stack, env, tmp_path / "main", name="main").start()
    replay = Worker(stack, replay_env, tmp_path / "replay", name="replay").start()
    workers.extend([main, replay])
    main.wait_ready(timeout=120)
    replay.wait_ready(timeout=120)

    first = [
        signal(s, seq, SHAPES[(seq + i) % len(SHAPES)])
        for seq in range(1, 6)
        for i, s in enumerate(SYMBOLS)
    ]
    records = [avro_record(sig) for sig in first[:7]]
    records.append((b"AAPL", CORRUPT))
    records += [json_record(sig) for sig in first[7:]]
    await produce(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], records)

    expected = expected_hashes(first, LANES, STRATEGY_ENV)
    assert len(expected) >= 8, "the fixture must produce decisions"
    out = await read_topic(
        stack.bootstrap, env["TORGHUT_DECISIONS_TOPIC"], expect=len(expected), timeout=90
    )
    decisions = [decode_decision(r.value) for r in out]  # the hash verifies against the identity

    # one decision per intent per enabled lane, exactly the domain core's, nothing for c or d
    assert Counter((d.account_label, d.decision_hash) for d in decisions) == Counter(expected)
    # keyed by account, and each account in one partition, the key's murmur2 partition
    for record, decision in zip(out, decisions, strict=True):
        assert record.key == decision.account_label.encode()
        assert record.partition == murmur2_partition(record.key, PARTITIONS)
    partitions = {label: {r.partition for r in out if r.key == label.encode()} for label in LANES}
    assert all(len(p) == 1 for p in partitions.values()), partitions

    # the corrupt record became a dead letter with its coordinates; the agent went on
    (dead,) = await read_topic(stack.bootstrap, env["TORGHUT_DLQ_TOPIC"], expect=1, timeout=30)
    letter = decode_dead_letter(dead.value)
    assert letter.reason.startswith("avro_")
    assert letter.source_topic == env["TORGHUT_SIGNALS_TOPIC"] and letter.value == CORRUPT
    assert letter.source_offset is not None

    # upstream redelivers everything, then one new signal: only the new one yields decisions
    newer = signal("AAPL", 99, SHAPES[0])
    await produce(
        stack.bootstrap,
        env["TORGHUT_SIGNALS_TOPIC"],
        [avro_record(sig) for sig in first] + [avro_record(newer)],
    )
    expected_newer = expected_hashes([newer], LANES, STRATEGY_ENV)
    total = len(expected) + len(expected_newer)
    out = await read_topic(
        stack.bootstrap, env["TORGHUT_DECISIONS_TOPIC"], expect=total, timeout=60, settle=3
    )
    assert Counter((r.key.decode(), json.loads(r.value)["decision_hash"]) for r in out) == Counter(
        expected + expected_newer
    )

    def dropped() -> tuple[float, float]:
        name = "torghut_signals_dropped_total"
        return metric(main, name, reason="duplicate"), metric(main, name, reason="stale")

    # per symbol the last signal comes back as a duplicate, the older ones as stale
    until(lambda: dropped() == (len(SYMBOLS), len(first) - len(SYMBOLS)), 30, "drops counted")
    assert metric(main, "torghut_decisions_emitted_total", account="acct-a") == total / 2
    assert metric(main, "torghut_decisions_emitted_total", account="acct-c") == 0

    # the independent replay of the same input, one signal at a time, produced the very same
    # decisions as the batches (redelivered duplicates and stale signals inside them)
    replayed = await read_topic(
        stack.bootstrap, replay_env["TORGHUT_DECISIONS_TOPIC"], expect=total, timeout=60, settle=3
    )
    assert sorted(json.loads(r.value)["decision_hash"] for r in replayed) == sorted(
        json.loads(r.value)["decision_hash"] for r in out
    )

    def replay_dropped() -> tuple[float, float]:
        name = "torghut_signals_dropped_total"
        return metric(replay, name, reason="duplicate"), metric(replay, name, reason="stale")

    until(lambda: replay_dropped() == dropped(), 30, "the same drops one at a time")

    # every record handled, the dead letter's included, is committed: both groups reach the end
    for group_env in (env, replay_env):
        group, topic = group_env["TORGHUT_APP_ID"], group_env["TORGHUT_SIGNALS_TOPIC"]

        async def at_end(group: str = group, topic: str = topic) -> bool:
            offsets = await committed_and_end(stack.bootstrap, group, topic, PARTITIONS)
            # a partition no record went to has nothing to commit (-1)
            return all(max(committed, 0) == end for committed, end in offsets.values())

        for _ in range(60):
            if await at_end():
                break
            await asyncio.sleep(0.5)
        assert await at_end(), await committed_and_end(stack.bootstrap, group, topic, PARTITIONS)


def test_a_bad_strategy_catalogue_stops_the_worker_with_a_clear_error(
    stack: StackInfo, tmp_path: Path
) -> None:
    env = app_env(
        "sig-bad",
        TRADING_STRATEGIES_JSON='[{"id": "typo", "type": "macd_rsi_momentum", "version": 7}]',
    )
    asyncio.run(create_topics(stack.bootstrap, app_topics(env), partitions=4))
    worker = Worker(stack, env, tmp_path / "bad").start()
    try:
        assert worker.wait_exit(timeout=120) != 0
    finally:
        worker.stop()
    assert "invalid configuration: strategy 'typo': no plugin macd_rsi_momentum@7" in worker.output
