"""B5, recovery: a decision ledger of N keys restored after local state is lost, and taken over
by a standby replica.

The ledger is filled through its changelog topic (`<app id>-lane-ledger-changelog`), in the
format faust writes: raw key `account_label|decision_hash`, raw value the ledger entry's JSON
(`streams.domain.ledger.encode_entry`), uncompressed, on the partition of the account (the
decisions topic's partition, which faust uses for the table write). Entries are realistic:
`submitted`, persisted, with the broker's order as acknowledged.

1. restart: a worker restores the ledger, is SIGKILLed, its data dir is deleted, it is started
   again → seconds from process start until `/readyz` is 200, and until every account trades
   again: from the restart on, one new decision per account not yet trading is sent every
   second, until each account has one executed ("trading").
2. standby: a second worker joins with `TORGHUT_TABLE_STANDBY_REPLICAS=1`; once its standbys
   had time to catch up, the first is SIGKILLed → seconds until the survivor trades for every
   account (same probing). Includes the consumer session timeout the dead member must expire
   first (TORGHUT_BROKER_SESSION_TIMEOUT_SECONDS), and the records the takeover had to restore.

"probes never taken" counts probes that no lane had taken (no ledger entry) once the lanes
stopped taking probes for max(5 s, the restore's duration) after every account traded again
(the backlog of probes sent during a long restore is drained first): decisions skipped for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.b4_scaling import decisions
from bench.context import Context
from bench.goals import B5_PROJECTED, B5_READY, GOAL_KEYS
from bench.report import BenchResult
from bench.signals import universe
from bench.support import (
    PARTITIONS,
    BenchWorker,
    accounts_json,
    ensure_topics,
    labels,
    partition_ids,
    prepare_app_topics,
    produce_many,
    rss_mib,
    start_simulator,
    worker_env,
)
from schemas.codecs import encode_decision
from streams.domain.ledger import encode_entry, received
from streams.domain.sizing import OrderPlan
from streams.ownership import partition_for as partition_for_key
from tests.support.pg import fetch
from tests.support.stack import StackInfo

SESSION_TIMEOUT_SECONDS = "6"
# s without a newly taken probe: the backlog of probes is drained. At least as long as the
# restore took: right after recovery the lanes' ledger scan can hold the event loop that long.
PROBE_GRACE = 5.0
PROBE_DRAIN_MAX = 180.0  # s: give up waiting for the backlog
LABEL_MARK = "zq-label-mark-zq"
HASH_MARK = "e" * 64


def _order(at: str) -> dict[str, object]:
    """An Alpaca order as the broker acknowledges it (the shape the ledger keeps)."""
    return {
        "id": "00000000-0000-4000-8000-000000000000",
        "client_order_id": HASH_MARK,
        "created_at": at,
        "updated_at": at,
        "submitted_at": at,
        "filled_at": None,
        "expired_at": None,
        "canceled_at": None,
        "failed_at": None,
        "replaced_at": None,
        "replaced_by": None,
        "replaces": None,
        "asset_id": "b0b6dd9d-8b9b-48a9-ba46-b9d54906e415",
        "symbol": "BN0001",
        "asset_class": "us_equity",
        "notional": None,
        "qty": "9",
        "filled_qty": "0",
        "filled_avg_price": None,
        "order_class": "",
        "order_type": "market",
        "type": "market",
        "side": "buy",
        "position_intent": "buy_to_open",
        "time_in_force": "day",
        "limit_price": None,
        "stop_price": None,
        "status": "pending_new",
        "extended_hours": False,
        "legs": None,
        "trail_percent": None,
        "trail_price": None,
        "hwm": None,
        "expires_at": at,
    }


def entry_template() -> bytes:
    """A real `submitted`, persisted ledger entry with markers for the account and the hash."""
    decision = decisions([LABEL_MARK], 1, ["BN0001"])[0].model_copy(
        update={"decision_hash": HASH_MARK}
    )
    now = datetime.now(UTC)
    plan = OrderPlan(
        client_order_id=HASH_MARK,
        symbol="BN0001",
        side=decision.action,
        qty=Decimal(9),
        time_in_force="day",
        price=Decimal("101.50"),
    )
    entry = (
        received(decision, now)
        .planned(plan, now)
        .marked_persisted()
        .submitting(now)
        .submitted(_order(now.isoformat()), now)
        .marked_persisted()
    )
    return encode_entry(entry)


def ledger_records(accounts: Sequence[str], n: int) -> Iterator[tuple[bytes, bytes]]:
    template = entry_template()
    for i in range(n):
        label = accounts[i % len(accounts)].encode()
        digest = hashlib.sha256(i.to_bytes(8, "big")).hexdigest().encode()
        value = template.replace(LABEL_MARK.encode(), label).replace(HASH_MARK.encode(), digest)
        yield label + b"|" + digest, value


def changelog(env: Mapping[str, str]) -> str:
    return f"{env['TORGHUT_APP_ID']}-lane-ledger-changelog"


async def fill_ledger(
    stack: StackInfo, app_id: str, accounts: Sequence[str], n: int
) -> tuple[str, float]:
    topic = f"{app_id}-lane-ledger-changelog"
    await ensure_topics(stack, [topic], compact=[topic])
    started = time.monotonic()
    await produce_many(
        stack,
        topic,
        ledger_records(accounts, n),
        partition_of=lambda key: partition_for_key(key.split(b"|", 1)[0], PARTITIONS),
    )
    return topic, time.monotonic() - started


async def trading_after(
    stack: StackInfo,
    env: Mapping[str, str],
    dsn: str,
    accounts: Sequence[str],
    since: float,
    timeout: float = 900.0,
) -> tuple[float, dict[str, str]]:
    """Send one new decision per account every second until every account has one executed:
    (seconds from `since` until the last account traded, every probe sent: hash → account)."""
    sent: dict[str, str] = {}
    pending = set(accounts)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"accounts not trading after {timeout:.0f}s: {sorted(pending)}")
        batch = decisions(sorted(pending), len(pending), universe(10))
        await produce_many(
            stack,
            env["TORGHUT_DECISIONS_TOPIC"],
            [(d.account_label.encode(), encode_decision(d)) for d in batch],
        )
        sent.update({d.decision_hash: d.account_label for d in batch})
        for _ in range(10):
            pending -= await executed_accounts(dsn, list(sent))
            if not pending:
                break
            await asyncio.sleep(0.1)
    return time.monotonic() - since, sent


async def executed_accounts(dsn: str, hashes: list[str]) -> set[str]:
    rows = await fetch(
        dsn,
        "SELECT DISTINCT alpaca_account_label AS account FROM executions "
        "WHERE client_order_id = ANY($1::text[])",
        hashes,
    )
    return {r["account"] for r in rows}


async def end_offsets(stack: StackInfo, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await partition_ids(stack, topic)]
        return {tp.partition: offset for tp, offset in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def ledger_hashes_since(stack: StackInfo, topic: str, since: Mapping[int, int]) -> set[str]:
    """Decision hashes of the ledger changelog's records from `since` (partition → offset) to
    its current end: keys only, so the filled ledger (up to 1M entries) is never read back."""
    ends = await end_offsets(stack, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        pending = {TopicPartition(topic, p) for p, end in ends.items() if end > since.get(p, 0)}
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, since.get(tp.partition, 0))
        hashes: set[str] = set()
        deadline = time.monotonic() + 120
        while pending and time.monotonic() < deadline:
            batch = await consumer.getmany(*pending, timeout_ms=200)
            for records in batch.values():
                hashes.update(r.key.split(b"|", 1)[-1].decode() for r in records if r.key)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp.partition]:
                    pending.discard(tp)
        return hashes
    finally:
        await consumer.stop()


async def untaken(
    stack: StackInfo,
    topic: str,
    filled: Mapping[int, int],
    dsn: str,
    probes: Mapping[str, str],
    grace: float,
) -> tuple[int, int]:
    """Once no further probe was taken for `grace` seconds: (probes no lane ever took: absent
    from the ledger changelog written after the fill (`filled`: its end offsets then), probes
    taken but not executed yet: e.g. parked for a re-drive)."""
    deadline = time.monotonic() + PROBE_DRAIN_MAX
    taken: set[str] = set()
    while True:
        await asyncio.sleep(grace)
        now_taken = await ledger_hashes_since(stack, topic, filled) & set(probes)
        if now_taken == taken or len(now_taken) == len(probes) or time.monotonic() > deadline:
            taken = now_taken
            break
        taken = now_taken
    rows = await fetch(
        dsn,
        "SELECT client_order_id FROM executions WHERE client_order_id = ANY($1::text[])",
        list(probes),
    )
    done = {r["client_order_id"] for r in rows}
    never = [h for h in probes if h not in taken and h not in done]
    return len(never), sum(1 for h in probes if h in taken and h not in done)


def restore_tables(lines: Sequence[str], table: str) -> list[dict[str, dict[int, int]]]:
    """faust's recovery log tables ("Highwater - Active", "Reading Starts At - Active") for one
    changelog, in log order: [{"highwater": {partition: offset}, "start": {...}}, ...]."""
    out: list[dict[str, dict[int, int]]] = []
    section: str | None = None
    topic = ""
    for line in lines:
        if "Highwater - Active" in line:
            out.append({"highwater": {}, "start": {}})
            section = "highwater"
        elif "Reading Starts At - Active" in line:
            section = "start" if out else None
        elif not line.startswith(("|", "+")):
            section = None
        elif section is not None and line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 3 and cells[1].isdigit():
                topic = cells[0] if cells[0] != "〃" else topic
                if topic.endswith(table):
                    out[-1][section][int(cells[1])] = int(cells[2])
    return out


BULK_RESTORE = re.compile(r"bulk restore: (\d+) of (\d+) changelog offsets in ([0-9.]+)s")


def restore_seconds(lines: Sequence[str]) -> float | None:
    """Seconds the first recovery spent restoring changelogs, from the worker's log: the bulk
    restore (streams/state/restore.py) plus whatever faust then read itself."""
    bulk: float | None = None
    started = done = None
    for line in lines:
        if "Recovery complete" in line:
            break
        if bulk is None and (found := BULK_RESTORE.search(line)):
            bulk = float(found.group(3))
        elif started is None and "Restoring state from changelog topics" in line:
            started = _log_time(line)
        elif started is not None and "Done reading from changelog topics" in line:
            done = _log_time(line)
    faust = (done - started).total_seconds() if started and done else None
    if bulk is None and faust is None:
        return None
    return (bulk or 0.0) + (faust or 0.0)


def _log_time(line: str) -> datetime:
    return datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")


def restored_records(tables: dict[str, dict[int, int]]) -> int:
    """Changelog records a recovery had to read: highwater minus where reading started."""
    start = tables["start"]
    return sum(
        max(0, hw - start.get(p, -1) - 1) for p, hw in tables["highwater"].items() if hw >= 0
    )


async def run(ctx: Context, result: BenchResult) -> None:
    profile, stack = ctx.profile, ctx.stack
    n, accounts = profile.ledger_keys, labels(profile.recovery_accounts)
    dsn = await ctx.databases.fresh()
    with start_simulator(accounts, universe(10)) as sim:
        env = worker_env(
            "b5",
            dsn,
            accounts_json(sim.url, accounts),
            TORGHUT_TABLE_STANDBY_REPLICAS="1",
            TORGHUT_BROKER_SESSION_TIMEOUT_SECONDS=SESSION_TIMEOUT_SECONDS,
        )
        app_id = ctx.track(env["TORGHUT_APP_ID"])
        await prepare_app_topics(stack, env)
        topic, fill_seconds = await fill_ledger(stack, app_id, accounts, n)
        ctx.shared["b5_filled"] = await end_offsets(stack, topic)
        result.details.update({"ledger_keys": n, "changelog": topic, "fill_seconds": fill_seconds})
        workers: list[BenchWorker] = []
        try:
            await restart(ctx, result, env, dsn, accounts, workers)
            await standby(ctx, result, env, dsn, accounts, workers)
        finally:
            for worker in workers:
                worker.kill()
    result.details["session_timeout_seconds"] = float(SESSION_TIMEOUT_SECONDS)


async def restart(
    ctx: Context,
    result: BenchResult,
    env: Mapping[str, str],
    dsn: str,
    accounts: Sequence[str],
    workers: list[BenchWorker],
) -> None:
    n, data = ctx.profile.ledger_keys, ctx.data_dir("b5-a")
    first = BenchWorker(ctx.stack, env, data, "b5-first").start()
    workers.append(first)
    first_ready = first.wait_readyz(900)
    result.details["first_start_rss_mib"] = rss_mib(first.pid)
    first.kill()
    shutil.rmtree(data, ignore_errors=True)
    again = BenchWorker(ctx.stack, env, data, "b5-restarted").start()
    workers.append(again)
    ready_task = asyncio.create_task(asyncio.to_thread(again.wait_readyz, 900))
    trading, probes = await trading_after(ctx.stack, env, dsn, accounts, again.started_at)
    ready = await ready_task
    restoring = restore_seconds(again.lines)
    ctx.shared["b5_grace"] = max(PROBE_GRACE, restoring or 0.0)
    rate = n / restoring if restoring else None
    result.add(B5_READY, ready, "s")
    result.add("restart → trading", trading, "s")
    result.add("changelog restore", restoring, "s")
    result.add("restore rate", rate, "keys/s")
    if n < GOAL_KEYS and rate and restoring is not None:
        # The start-up around the restore stays; the restore grows with the keys.
        result.add(B5_PROJECTED, ready - restoring + GOAL_KEYS / rate, "s")
    skipped, pending = await untaken(
        ctx.stack, changelog(env), ctx.shared["b5_filled"], dsn, probes, ctx.shared["b5_grace"]
    )
    result.add("restart: probes never taken", skipped)
    result.details.update(
        {
            "first_start_ready_seconds": first_ready,
            "restart_ready_seconds": ready,
            "restart_trading_seconds": trading,
            "restart_probes_sent": len(probes),
            "restart_probes_never_taken": skipped,
            "restart_probes_taken_not_executed": pending,
            "restart_rss_mib": rss_mib(again.pid),
        }
    )


async def standby(
    ctx: Context,
    result: BenchResult,
    env: Mapping[str, str],
    dsn: str,
    accounts: Sequence[str],
    workers: list[BenchWorker],
) -> None:
    active = workers[-1]
    survivor = BenchWorker(ctx.stack, env, ctx.data_dir("b5-b"), "b5-standby").start()
    workers.append(survivor)
    survivor.wait_readyz(900)
    # faust gives no reliable "standby caught up" signal (its standby highwaters are cleared
    # once recovery completes, so the remaining-records gauge reads 0 at once): wait as long as
    # a full restore took, then check in the survivor's log what the takeover had to restore.
    settle = max(10.0, float(result.details["restart_ready_seconds"]))
    await asyncio.sleep(settle)
    seen = len(survivor.lines)
    killed_at = time.monotonic()
    active.kill()
    took_over, probes = await trading_after(ctx.stack, env, dsn, accounts, killed_at)
    recoveries = restore_tables(survivor.lines[seen:], "lane-ledger-changelog")
    restored = sum(restored_records(r) for r in recoveries)
    skipped, pending = await untaken(
        ctx.stack, changelog(env), ctx.shared["b5_filled"], dsn, probes, ctx.shared["b5_grace"]
    )
    result.add("standby takeover → trading", took_over, "s")
    result.add("records restored at takeover", restored)
    result.add("takeover: probes never taken", skipped)
    result.details.update(
        {
            "standby_settle_seconds": settle,
            "standby_takeover_seconds": took_over,
            "takeover_probes_sent": len(probes),
            "takeover_probes_never_taken": skipped,
            "takeover_probes_taken_not_executed": pending,
            "takeover_recoveries": recoveries,
        }
    )
