"""The ledger's state machine: allowed transitions, next steps, round trip."""

from __future__ import annotations

from decimal import Decimal

import pytest

from schemas.decision import Action
from streams.domain.ledger import (
    LedgerState,
    LedgerTransitionError,
    Step,
    decode_entry,
    encode_entry,
    is_done,
    received,
)
from streams.domain.sizing import OrderPlan
from tests.unit.execution.fakes import T0, make_decision

D = make_decision()
PLAN = OrderPlan(
    client_order_id=D.decision_hash,
    symbol="AAPL",
    side=Action.buy,
    qty=Decimal(10),
    time_in_force="day",
    price=Decimal(100),
)


def test_steps_through_the_submit_path() -> None:
    entry = received(D, T0)
    assert entry.step is Step.plan
    planned = entry.planned(PLAN, T0)
    assert planned.step is Step.persist
    assert planned.marked_persisted().step is Step.submit
    submitting = planned.marked_persisted().submitting(T0)
    assert submitting.step is Step.resolve and submitting.attempts == 1
    assert submitting.submitting(T0).attempts == 2  # a new attempt after a lookup found nothing
    done = submitting.submitted({"id": "o-1", "status": "accepted"}, T0)
    assert done.step is Step.persist and done.alpaca_order_id == "o-1"
    assert done.marked_persisted().step is Step.done


@pytest.mark.parametrize("state", ["submitted", "rejected"])
def test_terminal_states_never_move(state: str) -> None:
    entry = received(D, T0).rejected(["x"], T0)
    if state == "submitted":
        entry = received(D, T0).planned(PLAN, T0).submitting(T0).submitted({"id": "o"}, T0)
    with pytest.raises(LedgerTransitionError):
        entry.submitting(T0)
    with pytest.raises(LedgerTransitionError):
        entry.rejected(["late"], T0)


def test_received_cannot_be_submitted_without_a_plan() -> None:
    with pytest.raises(LedgerTransitionError):
        received(D, T0).submitting(T0)


def test_parking_keeps_the_state_and_a_transition_clears_it() -> None:
    parked = received(D, T0).parked(T0, "backoff", T0)
    assert parked.state is LedgerState.received and parked.retry_at == T0
    assert parked.planned(PLAN, T0).retry_at is None


def test_done_is_read_off_the_bytes() -> None:
    entry = received(D, T0)
    submitted = entry.planned(PLAN, T0).submitting(T0).submitted({"id": "o"}, T0)
    assert is_done(encode_entry(submitted.marked_persisted()))
    assert is_done(encode_entry(entry.rejected(["x"], T0).marked_persisted()))
    assert not is_done(encode_entry(submitted))  # terminal, but its rows are not written yet
    assert not is_done(encode_entry(entry.planned(PLAN, T0).marked_persisted()))


def test_round_trip_and_key() -> None:
    entry = received(D, T0).planned(PLAN, T0)
    assert decode_entry(encode_entry(entry)) == entry
    assert entry.key == f"alpha|{D.decision_hash}"
