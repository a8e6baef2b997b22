"""The lane's submit path against in-memory ports: ordering of effects, ambiguity, isolation."""

from __future__ import annotations

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
    assert r.journal.events == [
        "ledger:planned",
        "db:planned",
        "ledger:submitting",
        "broker:submit",
        "ledger:submitted",
        "db:submitted",
    ]
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
