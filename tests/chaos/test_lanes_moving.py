"""Chaos (issue #22, scenario d): lanes move between live workers while decisions are in flight.

Six accounts on four decisions partitions; a worker joins (scale up), the worker that owned the
lanes first is SIGKILLed, another joins, one is SIGTERMed, one more joins, all while decisions
keep arriving and their POSTs take a while at the simulator. Asserted:

- exactly one broker order per decision (counted at the simulator by client order id), one
  `trade_decisions` and one `executions` row each, nothing of one account under another;
- no committed offset past an unfinished decision: the group's committed offsets of the
  decisions topic are sampled twice a second through the whole run, and every decision below a
  sampled offset had its ledger entry durably written (its changelog record's timestamp) before
  that sample; at the end the committed offsets reach the end of every partition.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from schemas.codecs import decode_decision
from schemas.decision import AccountDecision
from tests.chaos.outage_support import (
    SYMBOLS,
    OffsetSampler,
    alive,
    assert_counted,
    chaos_registry,
    chaos_simulator,
    committed_offsets,
    data_dir,
    dead_letters,
    end_offsets,
    read_records,
    wait_counted,
)
from tests.integration.lanes.helpers import decision, lane_env, prepare_topics, send
from tests.integration.persistence.conftest import head_dsn, head_template
from tests.integration.signals.helpers import murmur2_partition, read_topic
from tests.support.stack import StackInfo
from tests.support.worker import Worker

__all__ = ["head_dsn", "head_template"]

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

PARTITIONS = 4
LABELS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")
ROUNDS = 36  # one decision per account each, every 0.45 s: ~16 s of load


def owners_timeline(workers: list[Worker]) -> list[str]:
    """Every worker's assignment/revocation log lines, for a post-mortem."""
    keys = ("assigned", "revoked", "Seek", "rebalanc", "Discarded commit", "crash", "exit")
    return [
        f"{w.name} {line[:260]}"
        for w in workers
        for line in w.lines
        if any(k in line for k in keys)
    ]


async def test_d_lanes_move_between_live_workers_with_decisions_in_flight(
    stack: StackInfo, head_dsn: str, tmp_path: Path, workers: list[Worker]
) -> None:
    with chaos_simulator(LABELS) as sim:
        env = lane_env(
            "chaos-moving",
            head_dsn,
            chaos_registry(sim.url, LABELS),
            TORGHUT_TOPIC_PARTITIONS=str(PARTITIONS),
            TRADING_BROKER_RATE_LIMIT_PER_MINUTE="600",
            TRADING_RECONCILE_INTERVAL_SECONDS="5",
        )
        await prepare_topics(stack, env)
        for label in LABELS:  # each POST takes a while: decisions are mid-submit at each move
            sim.admin.set_faults(label, delay_post_response_ms=150)
        group, topic = env["TORGHUT_APP_ID"], env["TORGHUT_DECISIONS_TOPIC"]
        names = ("w1", "w2", "w3", "w4")
        ws = {n: Worker(stack, env, data_dir(tmp_path, n), name=n) for n in names}
        workers.append(ws["w1"].start())
        ws["w1"].wait_ready(timeout=120)

        sent: dict[str, list[AccountDecision]] = {label: [] for label in LABELS}
        moves: list[tuple[float, str]] = []
        t0 = time.monotonic()

        def note(what: str) -> None:
            moves.append((round(time.monotonic() - t0, 1), what))

        async def load() -> None:
            for n in range(ROUNDS):
                ds = [
                    decision(label, SYMBOLS[n % len(SYMBOLS)], notional="500") for label in LABELS
                ]
                for d in ds:
                    sent[d.account_label].append(d)
                await send(stack, env, *ds)
                await asyncio.sleep(0.45)

        async def move() -> None:
            await asyncio.sleep(2)
            workers.append(ws["w2"].start())  # scale up: partitions move while POSTs are out
            note("w2 joins")
            await asyncio.sleep(5)
            await asyncio.to_thread(ws["w1"].kill)  # SIGKILL: nothing committed on the way out
            note("w1 SIGKILL")
            workers.append(ws["w3"].start())
            note("w3 joins")
            await asyncio.sleep(5)
            await asyncio.to_thread(ws["w2"].stop)  # SIGTERM: graceful revocation, final commit
            note("w2 SIGTERM")
            await asyncio.sleep(1)
            workers.append(ws["w4"].start())
            note("w4 joins")

        stop = asyncio.Event()
        sampler = OffsetSampler(stack, group, topic)
        sampling = asyncio.create_task(sampler.run(stop))
        try:
            await asyncio.gather(load(), move())
            await asyncio.to_thread(ws["w3"].wait_ready, 120)
            result = await wait_counted("d-lanes-moving", sim, head_dsn, sent, timeout=300)
            for _ in range(60):  # the last commit comes within a commit interval
                final = await committed_offsets(stack, group, topic)
                ends = await end_offsets(stack, topic, PARTITIONS)
                if all(final.get(p, 0) == ends[p] for p in ends):
                    break
                await asyncio.sleep(0.5)
        finally:
            stop.set()
            await sampling

        # Which decision sits at which offset, and when its ledger entry was durably written.
        total = sum(len(ds) for ds in sent.values())
        records = await read_topic(stack.bootstrap, topic, expect=total, timeout=60)
        at_offset: dict[tuple[int, int], str] = {
            (r.partition, r.offset): decode_decision(r.value).decision_hash for r in records
        }
        changelog = f"{group}-lane-ledger-changelog"
        ledger_written: dict[str, int] = {}
        for r in await read_records(stack, changelog):
            if r.key is None:
                continue
            key = r.key.decode(errors="replace").strip('"')
            decision_hash = key.rsplit("|", 1)[-1]
            ledger_written.setdefault(decision_hash, r.timestamp)
        violations: list[dict[str, Any]] = []
        for sampled_at, offsets in sampler.samples:
            for partition, committed in offsets.items():
                for (p, offset), decision_hash in at_offset.items():
                    if p != partition or offset >= committed:
                        continue
                    written = ledger_written.get(decision_hash)
                    if written is None or written > sampled_at * 1000:
                        violations.append(
                            {"partition": p, "offset": offset, "committed": committed,
                             "sampled_at": sampled_at, "ledger_written_ms": written}
                        )  # fmt: skip
        dlq = await dead_letters(stack, env["TORGHUT_DLQ_TOPIC"])
        partitions_of = defaultdict(list)
        for label in LABELS:
            partitions_of[murmur2_partition(label.encode(), PARTITIONS)].append(label)
        result.extra.update(
            {
                "moves_at_seconds": moves,
                "accounts_per_partition": dict(sorted(partitions_of.items())),
                "decision_records": len(records),
                "offset_samples": len(sampler.samples),
                "offset_sample_errors": sampler.errors,
                "committed_past_unfinished_decision": len(violations),
                "decisions_committed_vs_end": {
                    p: (final.get(p, -1), ends[p]) for p in sorted(ends)
                },
                "workers_exit_codes": alive(workers),
                "dead_letters": len(dlq),
            }
        )
        print(result.report())
        if violations or not result.finished():
            print("violations:", json.dumps(violations[:20]))
            print("\n".join(owners_timeline(workers)[-200:]))
        assert not violations, violations[:10]
        assert_counted(result)
        assert len(records) == total
        for partition in ends:  # nothing left behind (no offset: an empty partition)
            assert final.get(partition, 0) == ends[partition], (partition, final, ends)
        # the SIGKILLed and the SIGTERMed workers are gone, the others run
        codes = alive(workers)
        assert codes["w1"] == -9 and codes["w2"] is not None, codes
        assert codes["w3"] is None and codes["w4"] is None, codes
        assert not dlq, [r.value[:200] for r in dlq[:3]]
