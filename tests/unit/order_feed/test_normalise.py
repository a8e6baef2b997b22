"""Normalisation, held events and batch dedupe of trade updates (attribution: test_attribution)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from streams.domain.trade_updates.model import (
    Attribution,
    ReconcileRequest,
    TradeUpdate,
    decode_record,
    encode_record,
)
from streams.domain.trade_updates.normalise import (
    MissingOrderIdentity,
    SourceCoordinates,
    held_event,
    normalise,
)
from streams.domain.trade_updates.rows import dedupe_batch, event_row, order_update_row
from tests.unit.order_feed.helpers import T0, data, parse, v1, v2

V1 = SourceCoordinates("t.v1", 0, 7)
V2 = SourceCoordinates("t.v2", 3, 9)


def norm(
    env: dict[str, Any],
    source: SourceCoordinates = V1,
    account: str = "paper",
    attribution: Attribution = Attribution.default,
) -> TradeUpdate:
    return normalise(parse(env), source, account, attribution, received_at=T0)


def held(env: dict[str, Any]) -> str:
    return held_event(parse(env), V1, T0, env).event_fingerprint


def test_a_held_event_keeps_its_identity_under_no_account() -> None:
    d = data(client_order_id="f" * 64)
    row = held_event(parse(v1(d)), V1, T0, v1(d))
    assert (row.client_order_id, row.alpaca_order_id) == ("f" * 64, d["order"]["id"])
    assert (row.source_topic, row.source_partition, row.source_offset) == ("t.v1", 0, 7)
    assert row.envelope == v1(d)
    # No account inside: not the fingerprint the event gets under any account.
    assert row.event_fingerprint != norm(v1(d)).fingerprint
    assert held(v1(d)) == held(v1(d, seq=5))


def test_missing_order_identity_is_refused() -> None:
    with pytest.raises(MissingOrderIdentity) as info:
        norm(v1(data(order_id=None, client_order_id=None)))
    assert info.value.reason == "missing_order_identity"


def test_fields_are_decimals_and_event_time_comes_from_the_payload() -> None:
    update = norm(v1(data("partial_fill", qty="4", price="101.25", filled_qty="4")))
    assert update.qty == Decimal(4)
    assert update.price == Decimal("101.25")
    assert update.filled_qty == Decimal(4)
    assert update.event_ts.isoformat() == "2026-03-02T15:00:00.123456+00:00"
    assert (update.source_topic, update.source_partition, update.source_offset) == ("t.v1", 0, 7)


def test_v1_and_v2_copies_of_one_event_share_a_fingerprint() -> None:
    d = data()
    copy_v1 = norm(v1(d, seq=1), account="paper", attribution=Attribution.order_index)
    copy_v2 = norm(v2(d, "paper", seq=40), V2, "paper", Attribution.payload)
    assert copy_v1.fingerprint == copy_v2.fingerprint
    assert copy_v1.version == 1 and copy_v2.version == 2


def test_same_event_attributed_to_two_accounts_is_two_events() -> None:
    d = data()
    assert norm(v2(d, "a"), V2, "a").fingerprint != norm(v2(d, "b"), V2, "b").fingerprint


def test_batch_dedupe_keeps_first_copy_in_order() -> None:
    d1, d2 = data(execution_id="x1"), data(execution_id="x2")
    updates = [
        norm(v2(d1, "a"), V2, "a"),
        norm(v2(d2, "a"), V2, "a"),
        norm(v2(d1, "a", seq=9), V2, "a"),
    ]
    unique, dropped = dedupe_batch(updates)
    assert [u.execution_id for u in unique] == ["x1", "x2"]
    assert dropped == 1


def test_rows_carry_account_identity_and_cumulative_state() -> None:
    update = norm(v2(data(), "a"), V2, "a")
    row = event_row(update)
    assert (row.account_label, row.event_fingerprint, row.source_offset) == (
        "a",
        update.fingerprint,
        9,
    )
    assert row.raw["account_label"] == "a"
    apply = order_update_row(update)
    assert (apply.account_label, apply.status, apply.filled_qty) == ("a", "filled", Decimal(10))
    assert apply.alpaca_order_id == update.order_id


def test_records_round_trip_through_the_rekeyed_topic() -> None:
    update = norm(v2(data(), "a"), V2, "a")
    assert decode_record(encode_record(update)) == update
    request = ReconcileRequest(account_label="a", reason="forwarder_reconnect", requested_at=T0)
    assert decode_record(encode_record(request)) == request


def test_outcomes_tell_redeliveries_from_stale_updates() -> None:
    from streams.domain.trade_updates.outcome import (
        OTHER_ACCOUNT,
        Outcome,
        classify,
        metrics_account,
    )
    from streams.persistence.rows import ApplyOutcome, ApplyResult

    update = norm(v2(data(), "a"), V2, "a")  # filled, cumulative 10
    assert classify(update, ApplyResult(ApplyOutcome.applied, 1, "filled", Decimal(10))) is (
        Outcome.applied
    )
    assert classify(update, ApplyResult(ApplyOutcome.not_found)) is Outcome.unlinked
    same = ApplyResult(ApplyOutcome.stale, 1, "filled", Decimal(10))
    assert classify(update, same) is Outcome.unchanged
    partial = norm(
        v2(data("partial_fill", status="partially_filled", filled_qty="4"), "a"), V2, "a"
    )
    assert classify(partial, same) is Outcome.out_of_order
    assert metrics_account("a", frozenset({"a"})) == "a"
    assert metrics_account("zz", frozenset({"a"})) == OTHER_ACCOUNT
