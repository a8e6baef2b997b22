"""Every triggering signal yields its decisions while the signals partitions move between three
workers under load: a worker SIGKILLed while it owns them, a worker joining, a worker SIGTERMed
(issue #22: one signal was lost, its offset committed past it; `compat.NoSkipConsumer`).

On a loss the test prints a post-mortem naming the cause's evidence: each lost signal's
partition and offset, when the group's committed offset passed it (sampled twice a second) or
that it never did, the signal-watermark changelog of its symbol (who advanced it past the signal,
when), the decisions around it, every worker's assignments of the signals topic over time, and
every worker's whole log saved beside the test's tmp folder."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codecs import decode_decision, decode_ta_signal
from streams.domain.fanout import fan_out
from streams.domain.strategy.catalog import build_runtime
from streams.settings import Settings
from tests.chaos.outage_support import (
    OffsetSampler,
    assignment_timeline,
    read_records,
    save_logs,
)
from tests.integration.signals.helpers import (
    SHAPES,
    T0,
    account,
    accounts_json,
    avro_record,
    expected_hashes,
    read_topic,
    signal,
)
from tests.support.kafka import create_topics, produce
from tests.support.stack import StackInfo, app_env, app_topics
from tests.support.worker import Worker

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PARTITIONS = 4
STRATEGY_ENV = {"TRADING_STRATEGY_RUNTIME_MODE": "plugin_v3"}
LANES = ("acct-a", "acct-b", "acct-c")
SYMBOLS = tuple(f"SYM{i}" for i in range(16))
STALE_BATCH = "records fetched before a rebalance or seek"  # compat.NoSkipConsumer's log line
BATCHES = 40  # one signal per symbol each, every 0.4 s: ~16 s of load


async def committed_and_end(stack: StackInfo, group: str, topic: str) -> dict[int, tuple[int, int]]:
    """partition → (the group's committed offset, the end offset)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {tp.partition: (committed[tp].offset if tp in committed else -1, ends[tp]) for tp in tps}


async def test_no_triggering_signal_is_lost_while_partitions_move(
    stack: StackInfo, tmp_path: Path, workers: list[Worker]
) -> None:
    flags_file = tmp_path / "flags.yaml"
    flags_file.write_text("{}\n")
    env = app_env(
        "rebalance",
        TORGHUT_TOPIC_PARTITIONS=str(PARTITIONS),
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=accounts_json(*(account(label) for label in LANES)),
        TRADING_ACCOUNT_LABEL="acct-a",
        TRADING_FLAGS_FILE=str(flags_file),
        TORGHUT_TABLE_STANDBY_REPLICAS="0",
        **STRATEGY_ENV,
    )
    await create_topics(stack.bootstrap, set(app_topics(env)), partitions=PARTITIONS)
    signals = [
        signal(symbol, seq, SHAPES[(seq + i) % len(SHAPES)])
        for seq in range(1, BATCHES + 1)
        for i, symbol in enumerate(SYMBOLS)
    ]
    expected = expected_hashes(signals, LANES, STRATEGY_ENV)
    triggering = len({h for _, h in expected}) // len(LANES)
    assert triggering >= BATCHES * len(SYMBOLS) // 3, "the fixture must trigger"

    first = Worker(stack, env, tmp_path / "w1", name="w1").start()
    workers.append(first)
    first.wait_ready(timeout=120)
    second = Worker(stack, env, tmp_path / "w2", name="w2")
    third = Worker(stack, env, tmp_path / "w3", name="w3")

    async def load() -> None:
        for n in range(BATCHES):
            batch = signals[n * len(SYMBOLS) : (n + 1) * len(SYMBOLS)]
            await produce(stack.bootstrap, env["TORGHUT_SIGNALS_TOPIC"], map(avro_record, batch))
            await asyncio.sleep(0.4)

    moved: list[str] = []

    def note(what: str) -> None:
        moved.append(f"{datetime.now(UTC).isoformat(timespec='milliseconds')} {what}")

    async def moves() -> None:
        await asyncio.sleep(2)
        workers.append(second.start())  # joins: partitions move while signals are in flight
        note("w2 started")
        await asyncio.sleep(6)
        await asyncio.to_thread(
            first.kill
        )  # SIGKILL of a worker owning signals partitions, nothing committed on exit
        note("w1 SIGKILLed")
        workers.append(third.start())
        note("w3 started")
        await asyncio.sleep(6)
        await asyncio.to_thread(second.stop)  # SIGTERM: a graceful revocation with the final commit
        note("w2 SIGTERMed and gone")

    stop = asyncio.Event()
    sampler = OffsetSampler(stack, env["TORGHUT_APP_ID"], env["TORGHUT_SIGNALS_TOPIC"])
    sampling = asyncio.create_task(sampler.run(stop))
    note("load starts")
    try:
        await asyncio.gather(load(), moves())
        third.wait_ready(timeout=120)
        out = await read_topic(
            stack.bootstrap,
            env["TORGHUT_DECISIONS_TOPIC"],
            expect=len(expected),
            timeout=180,
            settle=3,
        )
    finally:
        stop.set()
        await sampling
    got = Counter(
        (d.account_label, d.decision_hash) for d in (decode_decision(r.value) for r in out)
    )
    missing = set(expected) - set(got)
    group, topic = env["TORGHUT_APP_ID"], env["TORGHUT_SIGNALS_TOPIC"]
    for _ in range(60):  # the last commit comes within a commit interval
        offsets = await committed_and_end(stack, group, topic)
        if all(c == e for c, e in offsets.values()):
            break
        await asyncio.sleep(0.5)
    print(
        json.dumps(
            {
                "signals": len(signals),
                "triggering_signals": triggering,
                "expected_decisions": len(expected),
                "decision_records": len(out),
                "distinct_decisions": len(got),
                "redelivered_duplicates": sum(n - 1 for n in got.values()),
                "missing": len(missing),
                "signals_committed_vs_end": offsets,
            }
        )
    )
    skipped = [line for w in (first, second, third) for line in w.lines if "skipped by" in line]
    print("records skipped by a stream and released (not committable):", len(skipped))
    stale = [line for w in (first, second, third) for line in w.lines if STALE_BATCH in line]
    print("records fetched before a rebalance or seek, not delivered (times):", len(stale))
    if missing:
        await post_mortem(stack, env, signals, missing, (first, second, third), sampler, moved)
        print("worker logs:", save_logs((first, second, third), tmp_path))
    assert not missing, sorted(missing)[:10]
    assert set(got) == set(expected)  # and nothing else
    # every signal processed, and the group's offsets say so (nothing left behind)
    for partition, (committed, end) in offsets.items():
        assert committed == end, (partition, committed, end)


def iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="milliseconds")


async def post_mortem(
    stack: StackInfo,
    env: dict[str, str],
    signals: list[Any],
    missing: set[tuple[str, str]],
    workers: tuple[Worker, ...],
    sampler: OffsetSampler,
    moved: list[str],
) -> None:
    """Print which signals were lost and the evidence of where: offsets, commits, watermarks,
    decisions around them, assignments and what the workers logged about them."""
    runtime = build_runtime(Settings(**STRATEGY_ENV))  # type: ignore[arg-type]
    lost: set[tuple[str, int]] = set()
    for sig in signals:
        fanned = fan_out(runtime.evaluate(sig).intents, LANES, sig, sig.event_ts)
        hashes = {d.decision_hash for d in fanned}
        if hashes & {h for _, h in missing}:
            lost.add((sig.symbol, sig.seq))
    print("lost signals:", sorted(lost))
    topic = env["TORGHUT_SIGNALS_TOPIC"]
    records = await read_topic(stack.bootstrap, topic, expect=len(signals), timeout=60)
    where: dict[tuple[str, int], tuple[int, int]] = {}
    for r in records:
        sig = decode_ta_signal(r.value)
        where[(sig.symbol, sig.seq)] = (r.partition, r.offset)
    for symbol, seq in sorted(lost):
        partition, offset = where.get((symbol, seq), (-1, -1))
        passed = sampler.passed(partition, offset)
        print(
            f"lost {symbol} seq {seq}: partition {partition} offset {offset}; committed past it "
            + (f"at {iso(passed[0])} (committed {passed[1]})" if passed else "never in the samples")
        )
    symbols = {symbol for symbol, _ in lost}
    changelog = f"{env['TORGHUT_APP_ID']}-signal-watermarks-changelog"
    print("watermark changelog of the lost symbols (time, symbol, event ms:seq):")
    for r in await read_records(stack, changelog):
        key = (r.key or b"").decode(errors="replace").strip('"')
        if key in symbols:
            print(f"  {iso(r.timestamp / 1000)} {key} {(r.value or b'').decode(errors='replace')}")
    print("decisions of the lost symbols (first record time per seq):")
    firsts: dict[tuple[str, int], int] = {}
    for r in await read_records(stack, env["TORGHUT_DECISIONS_TOPIC"]):
        d = decode_decision(r.value)
        if d.symbol in symbols:
            seq = int((d.event_ts - T0).total_seconds())
            firsts[(d.symbol, seq)] = min(firsts.get((d.symbol, seq), r.timestamp), r.timestamp)
    lost_seqs = {seq for _, seq in lost}
    for (symbol, seq), ts in sorted(firsts.items()):
        if any(abs(seq - s) <= 3 for s in lost_seqs):
            print(f"  {symbol} seq {seq}: {iso(ts / 1000)}")
    print("moves:", moved)
    print("committed offsets of the signals topic over time (changes only):")
    last: dict[int, int] | None = None
    for at, offsets in sampler.samples:
        if offsets != last:
            print(f"  {iso(at)} {offsets}")
            last = offsets
    print("assignments of the signals topic:")
    for line in assignment_timeline(workers, topic):
        print(" ", line)
    for w in workers:
        for line in w.lines:
            if any(f"{sym} seq {seq} " in line for sym, seq in lost) or any(
                k in line
                for k in (
                    "Discarded commit",
                    "skipped by",
                    STALE_BATCH,
                    "CommitFailed",
                    "Traceback",
                )
            ):
                print(w.name, line[:400])
