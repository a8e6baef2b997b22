"""Failure handling on the submit path: poison rows, a database outage, controls re-checked at
the last moment, a ledger write that is not acknowledged in time."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from schemas.control import ControlCommand
from streams.domain.ledger import LedgerState, ledger_key
from tests.unit.execution.fakes import flags, make_decision, rig


def nul_character() -> BaseException:
    return asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence: 0x00")


async def test_a_poison_row_rejects_only_its_decision_and_the_account_keeps_trading(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    r.lane.status.configure(enabled=True)
    bad, good = make_decision(), make_decision(symbol="MSFT", price="200")
    r.sink.poison[bad.decision_hash] = nul_character()

    entry = await r.lane.handle(bad)
    assert entry.state is LedgerState.rejected
    assert entry.reasons == ("persist_failed:22021",)
    assert entry.persisted and entry.retry_at is None  # closed: never re-driven
    assert entry.last_error == "quarantined: persist_failed:22021"
    assert "broker:submit" not in r.journal.events
    # Neither the broker circuit nor the database backoff is touched; no broker error recorded.
    assert r.lane.circuit.failures == 0 and r.lane.database.failures == 0
    assert r.lane.status.consecutive_errors == 0 and r.lane.status.problems() == []

    done = await r.lane.handle(good)
    assert done.state is LedgerState.submitted and done.persisted


async def test_a_unique_violation_after_submission_closes_the_entry_without_resubmitting(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    d = make_decision()
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.submitted
    # The order exists; a redelivery whose rows are refused for their data is closed, once.
    r.ledger.rows[entry.key] = entry.model_copy(update={"persisted": False})
    r.sink.poison[d.decision_hash] = asyncpg.exceptions.UniqueViolationError("duplicate key")
    closed = await r.lane.handle(d)
    assert closed.state is LedgerState.submitted and closed.persisted
    assert closed.last_error == "quarantined: persist_failed:23505"
    assert r.journal.events.count("broker:submit") == 1
    assert r.lane.circuit.failures == 0


async def test_a_database_outage_parks_on_its_own_backoff_with_its_own_problem(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    r.lane.status.configure(enabled=True)
    d = make_decision()
    r.sink.fail["planned"] = 1
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.planned and parked.retry_at is not None
    assert r.lane.database.failures == 1
    assert r.lane.circuit.failures == 0  # not a broker problem
    assert r.lane.status.problems() == ["database_unavailable"]
    assert r.lane.status.consecutive_errors == 0  # not counted as a broker error

    r.clock.advance(2)
    done = await r.lane.handle(d)
    assert done.state is LedgerState.submitted
    assert r.lane.status.problems() == []
    assert r.lane.database.failures == 0


async def test_a_kill_switch_engaged_while_the_submitting_write_waits_stops_the_post(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    d = make_decision()
    hold = asyncio.Event()
    r.ledger.hold["submitting"] = hold
    task = asyncio.create_task(r.lane.handle(d))
    await asyncio.sleep(0.05)
    assert r.ledger.get(ledger_key("alpha", d.decision_hash)).state is LedgerState.submitting  # type: ignore[union-attr]
    r.controls["flags"] = flags(kill_for="alpha")  # engaged by flag while the write is blocked
    hold.set()
    entry = await task
    assert entry.state is LedgerState.rejected
    assert "kill_switch_enabled" in entry.reasons
    assert "broker:submit" not in r.journal.events and "submit" not in r.broker.calls


async def test_a_control_kill_and_the_age_guard_are_rechecked_after_the_write(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    d = make_decision()
    hold = asyncio.Event()
    r.ledger.hold["submitting"] = hold
    task = asyncio.create_task(r.lane.handle(d))
    await asyncio.sleep(0.05)
    r.controls["kill"] = ControlCommand(
        account="alpha", engaged=True, reason="ops", operator="test"
    )
    r.clock.advance(3600)  # the write took long: the decision is stale too
    hold.set()
    entry = await task
    assert entry.state is LedgerState.rejected
    assert set(entry.reasons) >= {"kill_switch_enabled", "decision_stale"}
    assert "submit" not in r.broker.calls


async def test_a_trading_state_hook_refuses_at_the_last_moment(tmp_path: Path) -> None:
    r = rig(tmp_path)
    refusals: list[str] = []
    r.lane.env.lane_refusals = lambda label: list(refusals)
    hold = asyncio.Event()
    r.ledger.hold["submitting"] = hold
    task = asyncio.create_task(r.lane.handle(make_decision()))
    await asyncio.sleep(0.05)
    refusals.append("trading_halted")
    hold.set()
    entry = await task
    assert entry.reasons == ("trading_halted",)
    assert "submit" not in r.broker.calls


async def test_a_submitting_write_not_acknowledged_in_time_parks_and_looks_up_first(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    r.lane.env.durable_timeout = 0.05
    d = make_decision()
    hold = asyncio.Event()
    r.ledger.hold["submitting"] = hold
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.submitting and parked.retry_at is not None
    assert "submit" not in r.broker.calls
    assert r.lane.circuit.failures == 0 and r.lane.storage.failures == 1

    hold.set()  # Kafka answers again
    r.clock.advance(5)
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.submitted
    assert r.broker.calls.index("lookup") < r.broker.calls.index("submit")
    assert r.broker.calls.count("submit") == 1


async def test_a_deferred_decision_is_recorded_parked_and_later_trades_once(
    tmp_path: Path,
) -> None:
    r = rig(tmp_path)
    d = make_decision()
    parked = await r.lane.defer(d)
    assert parked.state is LedgerState.received and parked.retry_at is not None
    assert r.broker.calls == [] and r.sink.rows == []  # no broker call, no database write
    # It waits for room in the backlog, never on a parked hold.
    assert r.lane.backlog.hashes() == [d.decision_hash] and d.decision_hash not in r.lane.parked
    # Another decision for the same signal slot is refused when deferred too.
    twin = make_decision(action="sell")
    refused = await r.lane.defer(twin)
    assert refused.state is LedgerState.rejected
    assert refused.reasons == ("duplicate_signal_decision",)

    entry = await r.lane.handle(d)  # re-driven
    assert entry.state is LedgerState.submitted and r.broker.calls.count("submit") == 1
    again = await r.lane.handle(twin)
    assert again.state is LedgerState.rejected and again.persisted
    assert r.broker.calls.count("submit") == 1


async def test_an_undecodable_control_record_engages_its_scope_and_is_dead_lettered() -> None:
    from aiokafka import ConsumerRecord

    from schemas.codecs import decode_dead_letter
    from streams.dlq import DeadLetters
    from streams.domain.kill_switch import KillSwitchBook
    from streams.execution.control_feed import UNDECODABLE, ControlFeed

    class Topic:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        async def send(self, *, key: bytes | None, value: bytes) -> None:
            self.sent.append(value)

    dlq = Topic()
    now = [100.0]
    book = KillSwitchBook()
    feed = ControlFeed("x:1", "control", book, dead_letters=DeadLetters(dlq), clock=lambda: now[0])
    record = ConsumerRecord(
        "control", 0, 7, 0, 0, b"kill_switch:alpha", b"{not json", None, 9, 9, []
    )
    await feed._apply(record)
    engaged = book.engaged_for("alpha")
    assert engaged is not None and engaged.reason == UNDECODABLE
    assert book.engaged_for("beta") is None  # only the scope its key names
    letters = [decode_dead_letter(v) for v in dlq.sent]
    assert [(x.reason, x.source_offset) for x in letters] == [(UNDECODABLE, 7)]

    feed._mark_caught_up()
    assert feed.stale_for() == 0.0
    now[0] += 90
    assert feed.stale_for() == 90.0  # a stalled feed is noticed


async def test_a_deferral_kafka_never_acknowledges_is_an_error_not_an_endless_wait(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The deferred decision's offset is acked once `defer` returns: a deferral that is not
    durable in time raises (the runner then stops the worker, the offset unacked)."""
    from streams.execution import lane as lane_module

    monkeypatch.setattr(lane_module, "DEFERRAL_TIMEOUT_SECONDS", 0.05)
    r = rig(tmp_path)
    r.ledger.hold["received"] = asyncio.Event()  # Kafka does not answer
    d = make_decision()
    with pytest.raises(lane_module.DeferralNotDurable, match="not acknowledged by Kafka"):
        await r.lane.defer(d)
    assert d.decision_hash not in r.lane.backlog  # never handed out for a re-drive
    assert r.broker.calls == []
