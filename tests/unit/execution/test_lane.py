"""The lane's submit path against in-memory ports: ordering of effects, ambiguity, isolation."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from schemas.control import ControlCommand
from streams.broker.errors import BrokerError, ErrorClass
from streams.domain.ledger import LedgerState
from tests.unit.execution.fakes import flags, make_decision, rig


def timeout() -> BrokerError:
    return BrokerError(ErrorClass.timeout, message="ReadTimeout")


async def test_happy_path_records_before_every_side_effect(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    entry = await r.lane.handle(d)

    assert entry.state is LedgerState.submitted and entry.persisted
    # `planned` is not written; the decision row and `submitting` are written together.
    assert set(r.journal.events[:2]) == {"db:planned", "ledger:submitting"}
    # After the POST: the rows, then `submitted` (persisted) in one ledger write.
    assert r.journal.events[2:] == ["broker:submit", "db:submitted"]
    stored = r.ledger.get(entry.key)
    assert stored is not None and stored.state is LedgerState.submitted and stored.persisted
    assert entry.plan is not None and entry.plan.qty == 10 and entry.plan.time_in_force == "day"
    assert r.index.owner == {d.decision_hash: "alpha", entry.alpaca_order_id: "alpha"}
    assert r.lane.status.submissions == 1


async def test_redelivered_decision_is_skipped(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    await r.lane.handle(d)
    calls = list(r.broker.calls)
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.submitted
    assert r.broker.calls == calls
    assert r.journal.events.count("broker:submit") == 1


async def test_ambiguous_post_then_lookup_finds_the_order(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()

    def accepted_then_timeout() -> BrokerError:
        assert r.lane.snapshot is not None
        plan = r.ledger.get(f"alpha|{d.decision_hash}").plan  # type: ignore[union-attr]
        assert plan is not None
        r.broker.accept(plan)  # the broker took it; the answer is lost
        return timeout()

    r.broker.then("submit", accepted_then_timeout)
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.submitted
    assert r.broker.calls.count("submit") == 1
    assert r.broker.calls.count("lookup") == 1


async def test_ambiguous_post_without_order_parks_then_resubmits_once(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    r.broker.then("submit", timeout)
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.submitting and parked.retry_at is not None
    assert d.decision_hash in r.lane.parked

    # A decision of the same lane meanwhile: no broker call while the lane backs off.
    other = make_decision(symbol="MSFT", price="200")
    waiting = await r.lane.handle(other)
    assert waiting.state is LedgerState.received and waiting.retry_at is not None
    assert r.broker.calls == ["account", "submit", "lookup"]

    r.clock.advance(2)
    assert r.lane.due(r.clock(), timedelta(0)) == [d.decision_hash, other.decision_hash]
    entry = await r.lane.handle(d)  # re-driven: lookup first, then the second attempt
    assert entry.state is LedgerState.submitted and entry.attempts == 2
    assert r.broker.calls[-2:] == ["lookup", "submit"]
    assert len(r.broker.orders) == 1
    assert d.decision_hash not in r.lane.parked


async def test_database_failure_after_ack_never_submits_again(tmp_path: Path) -> None:
    """The reference scenario: a DB write fails after the broker accepted, then a retry."""
    r = rig(tmp_path)
    d = make_decision()
    r.sink.fail["submitted"] = 1
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.submitted and not entry.persisted
    assert entry.retry_at is not None

    r.clock.advance(5)
    entry = await r.lane.handle(d)
    assert entry.persisted
    assert r.journal.events.count("broker:submit") == 1
    assert r.sink.rows[-1] == (d.decision_hash, "submitted")


async def test_kill_switch_is_checked_right_before_submission(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    r.sink.fail["planned"] = 1  # the planned row fails: the decision waits in `planned`
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.planned
    r.controls["kill"] = ControlCommand(account="alpha", engaged=True, operator="op", reason="x")
    r.clock.advance(5)
    entry = await r.lane.handle(d)
    assert entry.state is LedgerState.rejected and entry.reasons == ("kill_switch_enabled",)
    assert "submit" not in r.broker.calls


async def test_kill_switch_for_another_lane_does_not_apply(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.controls["kill"] = ControlCommand(account="beta", engaged=True, operator="op", reason="x")
    r.controls["flags"] = flags(kill_for="beta")
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.submitted


async def test_flags_unavailable_fail_safe(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.controls["flags"] = flags(available=False)
    entry = await r.lane.handle(make_decision())
    assert entry.reasons == ("flags_unavailable",)
    assert r.broker.calls == []


async def test_bad_credentials_reject_and_pause_the_lane(tmp_path: Path) -> None:
    r = rig(tmp_path)
    unauthorized = BrokerError(ErrorClass.auth, 401, None, "unauthorized.")
    r.broker.then("account", lambda: unauthorized)
    first = await r.lane.handle(make_decision())
    second = await r.lane.handle(make_decision(symbol="MSFT"))
    assert first.reasons == second.reasons == ("broker_unauthorized",)
    assert r.broker.calls == ["account"]  # no call while the lane is paused
    assert not r.lane.status.up and r.lane.status.last_error is not None

    r.clock.advance(10)  # after the backoff the next decision probes again, and succeeds
    entry = await r.lane.handle(make_decision(symbol="BTC/USD", notional="500", price="50000"))
    assert entry.state is LedgerState.submitted
    assert r.lane.status.up


async def test_definitive_broker_refusal_rejects_with_its_code(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.broker.then("submit", lambda: BrokerError(ErrorClass.insufficient, 403, 40310000, "bp"))
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.rejected
    assert entry.reasons == ("broker_rejected:40310000",)
    assert entry.persisted


async def test_parked_decision_that_went_stale_is_rejected(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    r.sink.fail["planned"] = 1
    await r.lane.handle(d)
    r.clock.advance(3600)
    entry = await r.lane.handle(d)
    assert entry.reasons == ("decision_stale",)
    assert "submit" not in r.broker.calls


async def test_poison_in_submitting_is_parked_never_rejected(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.broker.then("submit", lambda: RuntimeError("bug in the adapter"))
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.submitting and entry.retry_at is not None
    assert r.lane.status.last_error is not None and r.lane.status.last_error.kind == "internal"


async def test_poison_before_submission_is_rejected_with_a_reason(tmp_path: Path) -> None:
    r = rig(tmp_path)

    def broken(strategy_id: str) -> bool:
        raise KeyError(strategy_id)

    r.lane.env.strategy_enabled = broken
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.rejected and entry.reasons == ("lane_error:KeyError",)
    assert entry.persisted


async def test_disabled_strategy_and_cancel_on_request(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.controls["disabled"] = {"s1"}
    entry = await r.lane.handle(make_decision())
    assert entry.reasons == ("strategy_disabled",)
    assert await r.lane.cancel_open_orders("drill") == 1
    assert r.broker.calls == ["cancel"]


# ---------------------------------------------------------------- one decision per signal slot


async def test_a_second_different_decision_for_the_same_signal_is_refused(tmp_path: Path) -> None:
    r = rig(tmp_path)
    buy = make_decision(action="buy", strategy="momentum")
    first = await r.lane.handle(buy)
    assert first.state is LedgerState.submitted
    # The same signal re-evaluated elsewhere (another circuit state): another winner, same
    # decision — the same hash, so nothing new.
    again = await r.lane.handle(make_decision(action="buy", strategy="legacy"))
    assert again.decision_hash == buy.decision_hash and again.state is LedgerState.submitted
    # A different decision for the same (account, symbol, timeframe, event time) is refused.
    sell = make_decision(action="sell", strategy="vwap")
    refused = await r.lane.handle(sell)
    assert refused.state is LedgerState.rejected
    assert refused.reasons == ("duplicate_signal_decision",)
    assert r.journal.events.count("broker:submit") == 1
    assert (sell.decision_hash, "rejected") in r.sink.rows  # recorded, not dropped
    # Another signal time for the same symbol is a new slot.
    later = make_decision(action="sell", event_ts=buy.event_ts + timedelta(seconds=1))
    assert (await r.lane.handle(later)).reasons != ("duplicate_signal_decision",)


async def test_slots_are_per_account(tmp_path: Path) -> None:
    alpha, beta = rig(tmp_path / "a", label="alpha"), rig(tmp_path / "b", label="beta")
    await alpha.lane.handle(make_decision(account="alpha", action="buy"))
    entry = await beta.lane.handle(make_decision(account="beta", action="sell", holdings=None))
    assert entry.reasons != ("duplicate_signal_decision",)


# ---------------------------------------------------------------- label pinned to its account


async def test_keys_of_another_account_stop_the_lane(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.lane.status.configure(enabled=True)
    r.sink.pins["alpha"] = "PA9999999999"  # alpha first traded at another broker account
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.rejected and entry.reasons == ("account_mismatch",)
    assert "submit" not in r.broker.calls and "lookup" not in r.broker.calls
    assert not r.lane.status.up and r.lane.status.problems() == ["lane_down"]
    assert "account_mismatch" in (r.lane.status.down_reason or "")
    later = await r.lane.handle(make_decision(event_ts=make_decision().event_ts + timedelta(1)))
    assert later.reasons == ("account_mismatch",)
    assert r.broker.calls.count("account") == 1  # stopped: no more broker calls to check


async def test_a_submitting_entry_is_not_looked_up_at_another_account(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    r.broker.then("submit", timeout)  # POST outcome unknown: the entry stays `submitting`
    r.broker.then("lookup", lambda: None)
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.submitting
    lookups = r.broker.calls.count("lookup")
    # The process restarts with keys of another account under the same label.
    r.lane.verified_account = None
    r.sink.pins["alpha"] = "PA9999999999"
    r.clock.advance(120)
    again = await r.lane.handle(d)
    assert again.state is LedgerState.submitting and again.retry_at is not None
    assert r.broker.calls.count("lookup") == lookups and r.broker.calls.count("submit") == 1


async def test_first_use_pins_the_label_and_a_database_outage_parks(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.sink.fail["pin"] = 1
    parked = await r.lane.handle(make_decision())
    assert parked.retry_at is not None and "submit" not in r.broker.calls
    r.clock.advance(120)
    done = await r.lane.handle(make_decision())
    assert done.state is LedgerState.submitted
    assert r.sink.pins == {"alpha": "PA0000000001"}


# ---------------------------------------------------------------- fresh positions


async def test_a_refresh_requested_before_an_order_keeps_its_reservation(tmp_path: Path) -> None:
    r = rig(tmp_path)
    await r.lane.handle(make_decision(notional="1000"))
    reserved = r.lane.snapshot
    assert reserved is not None and reserved.buying_power < 100000
    # A refresh whose request predates the last order: the broker's answer may lack it.
    assert r.lane.last_order_sent is not None
    r.lane.last_order_sent = r.clock.now + timedelta(seconds=5)
    kept = await r.lane.refresh_snapshot()
    assert kept is reserved and r.lane.snapshot is reserved
    r.clock.advance(10)
    fresh = await r.lane.refresh_snapshot()
    assert fresh is not reserved and r.lane.snapshot is fresh


async def test_the_next_decision_may_start_once_the_broker_answered(tmp_path: Path) -> None:
    r = rig(tmp_path)
    d = make_decision()
    entry = await r.lane.handle(d, proceed=lambda: r.journal.events.append("proceed"))
    assert entry.state is LedgerState.submitted and entry.persisted
    # After the POST's answer, before this decision's own bookkeeping.
    assert r.journal.events[2:] == ["broker:submit", "proceed", "db:submitted"]


async def test_a_rejected_decision_never_proceeds_early(tmp_path: Path) -> None:
    r = rig(tmp_path)
    r.controls["flags"] = flags(kill_for="alpha")
    told: list[str] = []
    entry = await r.lane.handle(make_decision(), proceed=lambda: told.append("proceed"))
    assert entry.state is LedgerState.rejected and told == []  # the dispatcher goes on at the end


async def test_a_submitting_entry_without_an_order_gets_its_row_before_it_is_sent(
    tmp_path: Path,
) -> None:
    """A crash beside the first `submitting` may have left no decision row: the resolve path
    writes it (and a database outage parks the decision as planned, nothing sent)."""
    r = rig(tmp_path)
    d = make_decision()
    r.sink.fail["planned"] = 2  # the first write and the one on the re-drive
    parked = await r.lane.handle(d)
    assert parked.state is LedgerState.planned and parked.retry_at is not None
    stored = r.ledger.get(parked.key)
    assert stored is not None and stored.state is LedgerState.planned  # not `submitting`
    assert "broker:submit" not in r.journal.events

    # As if the worker had crashed after `submitting` was written beside a lost row.
    assert parked.plan is not None
    r.ledger.rows[parked.key] = parked.submitting(r.clock()).model_copy(update={"retry_at": None})
    r.journal.events.clear()
    again = await r.lane.handle(d)
    # Still `submitting` (an earlier attempt may have sent it): looked up again next time.
    assert again.state is LedgerState.submitting and again.retry_at is not None
    assert r.broker.calls[-1] == "lookup" and "broker:submit" not in r.journal.events

    r.clock.advance(60)
    done = await r.lane.handle(d)
    assert done.state is LedgerState.submitted and done.persisted
    events = r.journal.events
    assert r.broker.calls[-2:] == ["lookup", "submit"]
    assert events.index("db:planned") < events.index("broker:submit")
    assert events.count("broker:submit") == 1


async def test_a_second_delivery_waits_for_the_first_even_after_it_let_the_lane_go(
    tmp_path: Path,
) -> None:
    """Redelivered and re-driven at once: the second pass of a decision never overlaps the
    first one's bookkeeping (one writer per ledger entry), so it neither looks the order up nor
    writes its rows beside it."""
    r = rig(tmp_path)
    d = make_decision()
    hold = asyncio.Event()
    r.sink.hold["submitted"] = hold  # the first pass's execution row is slow
    went: list[str] = []
    first = asyncio.create_task(r.lane.handle(d, proceed=lambda: went.append("first")))
    await asyncio.sleep(0.05)
    assert went == ["first"]  # the broker answered; the lane's next decision may go
    second = asyncio.create_task(r.lane.handle(d, proceed=lambda: went.append("second")))
    await asyncio.sleep(0.05)
    assert not second.done() and r.broker.calls.count("lookup") == 0
    hold.set()
    a, b = await first, await second
    assert a.state is LedgerState.submitted and a.persisted
    assert b == a and went == ["first"]  # the second found it done: nothing sent, nothing run
    assert r.broker.calls.count("submit") == 1 and r.journal.events.count("db:submitted") == 1


async def test_a_deferral_of_a_decision_being_handled_writes_nothing(tmp_path: Path) -> None:
    """A duplicate deferred while the first pass is still before its first write must not put
    a `received` (deferred) entry that could land after that pass's `submitting`."""
    r = rig(tmp_path)
    d = make_decision()
    hold = asyncio.Event()
    r.sink.hold["planned"] = hold  # the first pass waits on its decision row
    first = asyncio.create_task(r.lane.handle(d))
    await asyncio.sleep(0.05)
    deferred = await r.lane.defer(d)
    assert deferred.state is not LedgerState.received or deferred.last_error is None
    assert len(r.lane.backlog) == 0  # not queued for a re-drive: the running pass owns it
    hold.set()
    done = await first
    assert done.state is LedgerState.submitted and done.persisted
    stored = r.ledger.get(done.key)
    assert stored is not None and stored.state is LedgerState.submitted
    assert r.broker.calls.count("submit") == 1
