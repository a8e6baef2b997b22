"""(g) a poison row, (f) a malformed control record and (e) a flag kill switch engaged while the
durable `submitting` write is blocked — one real worker process for the module, real Kafka and
Postgres, the simulator over HTTP, a Flipt-protocol flag server. Tests run in file order; each
releases what it engaged. (g) and (f) are quick and run in `make test`; (e) freezes the Kafka
broker for a few seconds and runs in `make chaos`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from schemas.codecs import decode_dead_letter, encode_control
from schemas.control import ControlCommand, control_key
from simulator.testing import RunningSimulator
from streams.domain.ledger import LedgerState
from tests.chaos.fault_support import (
    PRICES,
    Decisions,
    Sender,
    kafka_paused,
    ledger,
    orders_by_client_id,
    report,
    sim_accounts,
    summary_of_orders,
)
from tests.integration.lanes.helpers import (
    decision_row,
    lane_env,
    prepare_topics,
    reasons,
    registry,
    start_worker,
    topic_values,
    wait_executed,
    wait_status,
    wait_until,
)
from tests.integration.persistence.conftest import _create, _drop, head_template
from tests.support.flipt import FakeFlipt
from tests.support.pg import fetch
from tests.support.stack import StackInfo, unique
from tests.support.worker import Worker

__all__ = ["head_template"]

pytestmark = pytest.mark.integration

LABELS = ("alpha", "beta")
KILL_FLAG = "torghut_trading_kill_switch"


@dataclass
class World:
    stack: StackInfo
    env: dict[str, str]
    dsn: str
    sim: RunningSimulator
    flipt: FakeFlipt
    worker: Worker
    decisions: Decisions

    @property
    def app_id(self) -> str:
        return self.env["TORGHUT_APP_ID"]

    def lane(self, label: str) -> dict[str, Any]:
        lane: dict[str, Any] = self.worker.get("/trading/status").json()["accounts"][label]
        return lane

    async def send(self, *items: Any) -> None:
        async with Sender(self.stack, self.env["TORGHUT_DECISIONS_TOPIC"]) as sender:
            await sender.send(*items)

    async def control(self, key: bytes, value: bytes) -> None:
        async with Sender(self.stack, self.env["TORGHUT_DECISIONS_TOPIC"]) as sender:
            await sender.send_raw(self.env["TORGHUT_CONTROL_TOPIC"], key, value)


@pytest.fixture(scope="module")
def world(
    stack: StackInfo, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    name = unique("chaos_ctl").replace("-", "_")
    dsn = asyncio.run(_create(stack, name, template=head_template))
    sim = RunningSimulator(sim_accounts(LABELS))
    sim.admin.set_prices(PRICES)
    flipt = FakeFlipt().start()
    env = lane_env(
        "chaos-ctl",
        dsn,
        registry(sim.url, list(LABELS)),
        TRADING_FLAGS_BACKEND="flipt",
        FLIPT_URL=flipt.url,
    )
    asyncio.run(prepare_topics(stack, env))
    data_dir = tmp_path_factory.mktemp("chaos-ctl")
    worker = start_worker(stack, env, data_dir, "chaos-ctl")
    try:
        yield World(stack, env, dsn, sim, flipt, worker, Decisions("chaos-ctl"))
    finally:
        worker.stop()
        (data_dir / "worker.log").write_text(worker.output)
        flipt.close()
        sim.stop()
        asyncio.run(_drop(stack, name))


async def wait_kill(world: World, label: str, engaged: bool, timeout: float = 20.0) -> Any:
    async def check() -> Any:
        switch = world.lane(label)["kill_switch"]
        return switch if switch["engaged"] is engaged else None

    return await wait_until(check, timeout, f"{label} kill switch engaged={engaged}")


async def test_g_a_poison_row_rejects_only_its_decision(world: World) -> None:
    """A NUL character Postgres refuses, in one decision among good ones of the same account:
    only that one is rejected (`persist_failed:<sqlstate>`), nothing is sent for it, the
    account and the other account keep trading, the lane is not reported unhealthy."""
    make = world.decisions.make
    good_before = [make("alpha") for _ in range(3)]
    bad = make("alpha", strategy_id="nul\x00here")
    good_after = [make("alpha", "MSFT") for _ in range(3)]
    other = [make("beta") for _ in range(3)]
    await world.send(*good_before, bad, *good_after, *other)
    good = [*good_before, *good_after, *other]
    for d in good:
        await wait_executed(world.dsn, d, timeout=60)

    async def closed() -> Any:
        entry = (await ledger(world.stack, world.app_id, idle=1.0)).get(bad.decision_hash)
        done = entry is not None and entry.state is LedgerState.rejected and entry.persisted
        return entry if done else None

    entry = await wait_until(closed, 60, "the poison decision closed in the ledger")
    orders = orders_by_client_id(world.sim.admin, LABELS)
    rows = await fetch(
        world.dsn,
        "SELECT alpaca_account_label AS label, status, count(*) AS n FROM trade_decisions "
        "WHERE decision_hash = ANY($1::text[]) GROUP BY 1, 2 ORDER BY 1, 2",
        [d.decision_hash for d in [*good, bad]],
    )
    health = world.worker.get("/trading/health").json()
    report(
        "(g) poison row",
        {
            "decisions": f"{len(good) + 1} (alpha {len(good_before) + 1 + len(good_after)}, "
            f"beta {len(other)}), 1 poison",
            "poison outcome": f"{entry.state.value} {list(entry.reasons)} ({entry.last_error})",
            "broker orders": summary_of_orders(orders, [d.decision_hash for d in [*good, bad]]),
            "poison decision orders": orders["alpha"][bad.decision_hash],
            "decision rows": [f"{r['label']} {r['status']} x{r['n']}" for r in rows],
            "health problems": health.get("problems", {}),
        },
    )
    assert len(entry.reasons) == 1 and entry.reasons[0].startswith("persist_failed:22")
    assert orders["alpha"][bad.decision_hash] == 0
    assert await decision_row(world.dsn, bad) is None  # Postgres refused every row of it
    for d in good:
        assert orders[d.account_label][d.decision_hash] == 1, d.decision_hash
    assert sum(int(r["n"]) for r in rows) == len(good)
    assert "alpha" not in json.dumps(health.get("problems", {}))
    after = make("alpha")
    await world.send(after)
    await wait_executed(world.dsn, after, timeout=30)  # still trading


async def test_f_a_malformed_control_record_engages_its_scope(world: World) -> None:
    """An undecodable record keyed `kill_switch:alpha`: alpha's switch engages (reason
    `undecodable_control_record`), the record is dead-lettered, alpha's next decision gets no
    order at the broker; beta trades on. A valid release frees alpha again."""
    key = b"kill_switch:alpha"
    malformed = b'{"kind": "kill_switch", "account": "alpha", "engaged": tru'
    await world.control(key, malformed)
    switch = await wait_kill(world, "alpha", True)
    a, b = world.decisions.make("alpha"), world.decisions.make("beta")
    await world.send(a, b)
    row = await wait_status(world.dsn, a, "rejected", timeout=30)
    await wait_executed(world.dsn, b, timeout=30)

    async def dead_letter() -> Any:
        for value in await topic_values(world.stack, world.env["TORGHUT_DLQ_TOPIC"], idle=1.0):
            letter = decode_dead_letter(value)
            if letter.source_topic == world.env["TORGHUT_CONTROL_TOPIC"] and letter.key == key:
                return letter
        return None

    letter = await wait_until(dead_letter, 30, "the malformed control record dead-lettered")
    orders = orders_by_client_id(world.sim.admin, LABELS)
    status = world.worker.get("/trading/status").json()
    report(
        "(f) malformed control record",
        {
            "alpha kill switch (status)": switch,
            "dead letter": f"reason={letter.reason} offset={letter.source_offset} "
            f"value={letter.value!r}",
            "alpha decision": f"{row['status']} {reasons(row)}",
            "broker orders": summary_of_orders(orders, [a.decision_hash, b.decision_hash]),
            "beta kill switch (status)": status["accounts"]["beta"]["kill_switch"],
        },
    )
    assert "undecodable_control_record" in str(switch["reason"])
    assert letter.reason == "undecodable_control_record" and letter.value == malformed
    assert reasons(row) == ["kill_switch_enabled"]
    assert orders["alpha"][a.decision_hash] == 0
    assert orders["beta"][b.decision_hash] == 1
    assert status["accounts"]["beta"]["kill_switch"]["engaged"] is False

    release = ControlCommand(account="alpha", engaged=False, operator="test", reason="fixed")
    await world.control(control_key(release), encode_control(release))
    await wait_kill(world, "alpha", False)
    after = world.decisions.make("alpha")
    await world.send(after)
    await wait_executed(world.dsn, after, timeout=30)


async def lock_waiters(dsn: str) -> int:
    """Backends of this database waiting for a lock on trade_decisions."""
    rows = await fetch(
        dsn,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query ILIKE '%trade_decisions%'",
    )
    return int(rows[0]["n"])


@pytest.mark.chaos
async def test_e_a_flag_kill_switch_engaged_while_the_submitting_write_waits(
    world: World,
) -> None:
    """The lane writes a decision's row and its durable `submitting` at the same time. An
    earlier decision of the account (`first`) is held on its row (a table lock) with the target
    decision queued behind it; Kafka is frozen, the lock released: `first` goes on (its
    `submitting` was durable before the freeze), then the target's row goes in while its
    durable `submitting` waits for Kafka. The kill switch is engaged by flag meanwhile; Kafka
    comes back. No POST may reach the broker for the target: it ends `rejected`
    (`kill_switch_enabled`) and the account trades again once the flag is gone."""
    first = world.decisions.make("alpha")
    d = world.decisions.make("alpha")
    orders_before = len(world.sim.admin.orders("alpha"))
    lock = await asyncpg.connect(world.dsn)
    paused_for = 0.0
    flag_seen_after = 0.0
    try:
        tx = lock.transaction()
        await tx.start()
        await lock.execute("LOCK TABLE trade_decisions IN ACCESS EXCLUSIVE MODE")
        await world.send(first, d)

        async def held() -> bool:
            return await lock_waiters(world.dsn) > 0

        await wait_until(held, 30, "the lane waiting on the first decision's row")
        await asyncio.sleep(1.0)  # its `submitting` acknowledged; the target read, queued
        with kafka_paused() as paused_at:
            await tx.rollback()  # `first` goes on; then the target reaches its writes

            async def planned() -> bool:
                row = await decision_row(world.dsn, d)
                return row is not None

            await wait_until(planned, 10, "the target's decision row")
            await asyncio.sleep(0.5)  # the lane is now inside its durable `submitting` write
            world.flipt.set_flag(KILL_FLAG, True, entity="torghut:alpha")
            await wait_kill(world, "alpha", True, timeout=10)
            flag_seen_after = time.monotonic() - paused_at
            await asyncio.sleep(1.0)
            paused_for = time.monotonic() - paused_at
    finally:
        await lock.close()
    try:
        row = await wait_status(world.dsn, d, "rejected", timeout=90)
        entry = (await ledger(world.stack, world.app_id)).get(d.decision_hash)
        await asyncio.sleep(2.0)  # a late POST would show up by now
        orders = orders_by_client_id(world.sim.admin, LABELS)
        orders_after = len(world.sim.admin.orders("alpha"))
        report(
            "(e) flag kill switch during a blocked submitting write",
            {
                "kafka frozen for": f"{paused_for:.1f}s (flag seen by the worker after "
                f"{flag_seen_after:.1f}s)",
                "decision": f"{row['status']} {reasons(row)}",
                "ledger entry": None
                if entry is None
                else f"{entry.state.value} attempts={entry.attempts} reasons={list(entry.reasons)}",
                "broker orders for it": orders["alpha"][d.decision_hash],
                "alpha broker orders before/after": f"{orders_before}/{orders_after}",
            },
        )
        assert reasons(row) == ["kill_switch_enabled"]
        assert orders["alpha"][d.decision_hash] == 0
        assert orders["alpha"][first.decision_hash] == 1  # sent before the switch: allowed
        assert orders_after == orders_before + 1  # nothing else reached alpha's broker account
        assert entry is not None and entry.state is LedgerState.rejected
        assert entry.attempts == 1  # it did reach the durable `submitting` write
    finally:
        world.flipt.delete_flag(KILL_FLAG)
    await wait_kill(world, "alpha", False)
    after = world.decisions.make("alpha")
    await world.send(after)
    await wait_executed(world.dsn, after, timeout=60)
