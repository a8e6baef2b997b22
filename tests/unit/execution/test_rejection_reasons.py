"""Every rejected decision carries a standard reason: the lane's broker refusals, the ledger's
own guard, and the Postgres statements that can move a decision to `rejected` (an order the
broker rejected after accepting it, mirrored from a trade update or the reconciler)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.broker.errors import BrokerError, ErrorClass
from streams.domain.ledger import LedgerState, LedgerTransitionError, received
from streams.persistence import repository
from streams.persistence.status import BROKER_ORDER_REJECTED, rejection_reasons_sql
from tests.unit.execution.fakes import make_decision, rig

REFUSALS = [
    BrokerError(ErrorClass.insufficient, 403, 40310000, "buying power"),
    BrokerError(ErrorClass.forbidden, 403, None, "forbidden"),
    BrokerError(ErrorClass.rejected, 422, 42210000, "bad qty"),
    BrokerError(ErrorClass.rejected, 400, None, ""),
    BrokerError(ErrorClass.not_found, 404, None, ""),
    BrokerError(ErrorClass.rejected, None, None, "no status at all"),
]


@pytest.mark.parametrize("refusal", REFUSALS, ids=lambda e: str(e))
async def test_a_broker_refusal_rejects_with_a_broker_rejected_reason(
    tmp_path: Path, refusal: BrokerError
) -> None:
    r = rig(tmp_path)
    r.broker.then("submit", lambda: refusal)
    entry = await r.lane.handle(make_decision())
    assert entry.state is LedgerState.rejected and entry.persisted
    assert len(entry.reasons) == 1 and entry.reasons[0].startswith("broker_rejected:")
    detail = entry.reasons[0].removeprefix("broker_rejected:")
    assert detail and detail != "None"
    assert r.sink.rows[-1] == (entry.decision_hash, "rejected")


def test_the_ledger_refuses_a_rejection_without_reasons() -> None:
    entry = received(make_decision(), datetime.now(UTC))
    with pytest.raises(LedgerTransitionError):
        entry.rejected((), datetime.now(UTC))
    with pytest.raises(LedgerTransitionError):
        entry.rejected([""], datetime.now(UTC))
    assert entry.rejected(["kill_switch_enabled"], datetime.now(UTC)).reasons == (
        "kill_switch_enabled",
    )


def test_every_statement_that_can_store_rejected_defaults_the_reason() -> None:
    """The SQL that writes a decision status: the upsert, the reconciler's status update, the
    execution upsert's mirror and the trade update's mirror all fill in the standard reason."""
    statements = {
        "upsert": repository._UPSERT_DECISIONS,
        "set_status": repository._SET_DECISION_STATUS,
        "execution_mirror": repository._UPSERT_EXECUTION_AND_MIRROR,
        "decided_execution_mirror": repository._UPSERT_DECIDED_EXECUTION_AND_MIRROR,
        "apply_by_order": repository._APPLY_BY_ORDER,
        "apply_by_id": repository._APPLY_BY_ID,
    }
    for name, sql in statements.items():
        assert BROKER_ORDER_REJECTED in sql, name
    assert BROKER_ORDER_REJECTED.startswith("broker_rejected:")
    rendered = rejection_reasons_sql("x.status", "x.reasons")
    assert "x.status = 'rejected'" in rendered and "jsonb_array_length(x.reasons) = 0" in rendered
