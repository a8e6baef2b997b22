"""Input integrity of trade updates through the router: event-time bound, numeric validity,
known account labels, and the attribution precedence (labels → index → Postgres → held/default).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from streams.domain.trade_updates.model import Attribution
from tests.unit.order_feed.fakes import World, route
from tests.unit.order_feed.helpers import data, v1, v2

CID = "c" * 64
OID = "61e69015-8549-4bfd-b9c3-01e75843f47d"


# ---- event time


@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        ("payload.timestamp", lambda e: e["payload"].update(timestamp="9999-12-31T23:59:59Z")),
        (
            "payload.order.updated_at",
            lambda e: e["payload"]["order"].update(updated_at="2026-03-02T15:07:00Z"),
        ),
        ("eventTs", lambda e: e.update(eventTs="9999-01-01T00:00:00Z")),
    ],
)
async def test_an_event_dated_beyond_the_skew_is_a_dead_letter(where: str, mutate: Any) -> None:
    env = v2(data(), "acct-a")
    mutate(env)
    world = await route(World(), env)
    assert world.reasons == ["event_time_in_future"]
    assert where in world.errors[0]
    assert world.sent == [] and world.held == []


async def test_an_event_within_the_skew_passes() -> None:
    env = v2(data(timestamp="2026-03-02T15:05:59Z"), "acct-a")  # now is 15:01, skew 5 min
    world = await route(World(), env)
    assert [u.account_label for u in world.sent] == ["acct-a"] and world.reasons == []


# ---- numbers


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "-1", "1e400", "1e12"])
@pytest.mark.parametrize(
    ("where", "mutate"),
    [
        ("payload.qty", lambda e, v: e["payload"].update(qty=v)),
        ("payload.price", lambda e, v: e["payload"].update(price=v)),
        ("payload.order.filled_qty", lambda e, v: e["payload"]["order"].update(filled_qty=v)),
        ("payload.order.qty", lambda e, v: e["payload"]["order"].update(qty=v)),
        (
            "payload.order.filled_avg_price",
            lambda e, v: e["payload"]["order"].update(filled_avg_price=v),
        ),
        ("payload.order.limit_price", lambda e, v: e["payload"]["order"].update(limit_price=v)),
    ],
)
async def test_non_finite_negative_or_huge_numbers_name_their_field(
    where: str, mutate: Any, value: str
) -> None:
    env = v2(data(), "acct-a")
    mutate(env, value)
    world = await route(World(), env)
    assert world.reasons == ["invalid_number"]
    assert f"InvalidTradeUpdate: {where}:" in world.errors[0]
    assert world.sent == []


async def test_nan_as_a_json_literal_is_an_invalid_number_too() -> None:
    raw = v2(data(qty="777"), "acct-a")
    text = json.dumps(raw).replace('"qty": "777"', '"qty": NaN', 1)
    world = await route(World(), text.encode())
    assert world.reasons == ["invalid_number"] and "payload.qty" in world.errors[0]


async def test_a_short_position_is_a_valid_negative_number() -> None:
    env = v2(data(), "acct-a")
    env["payload"]["position_qty"] = "-10"
    world = await route(World(), env)
    assert len(world.sent) == 1 and world.reasons == []


# ---- labels


@pytest.mark.parametrize("label", ["ho-ghost", "HO ALPHA!", "acct-a\n", "x" * 65])
@pytest.mark.parametrize("where", ["payload", "order", "envelope"])
async def test_a_label_outside_the_registry_is_unknown_account(label: str, where: str) -> None:
    env = v1(data())
    if where == "payload":
        env["payload"]["account_label"] = label
    elif where == "order":
        env["payload"]["order"]["account_label"] = label
    else:
        env["accountLabel"] = label
    world = World(index={CID: "acct-a"}, postgres={CID: ["acct-a"]})
    await route(world, env)
    assert world.reasons == ["unknown_account"]
    assert world.sent == [] and world.held == []


async def test_two_different_known_labels_are_a_conflict_not_a_choice() -> None:
    env = v2(data(account_label="acct-b"), "acct-a")
    world = await route(World(), env)
    assert world.reasons == ["account_label_conflict"] and world.sent == []


async def test_an_index_or_postgres_owner_outside_the_registry_is_unknown_account() -> None:
    by_index = await route(World(index={CID: "retired"}), v1(data()))
    by_db = await route(World(postgres={CID: ["retired"]}), v1(data()))
    assert by_index.reasons == by_db.reasons == ["unknown_account"]
    assert by_index.sent == by_db.sent == []


async def test_an_order_with_two_owners_in_postgres_is_ambiguous() -> None:
    world = await route(World(postgres={CID: ["acct-a", "acct-b"]}), v1(data()))
    assert world.reasons == ["ambiguous_account"] and world.sent == [] and world.held == []


# ---- attribution precedence


def attributed(world: World) -> list[tuple[str, Attribution]]:
    return [(u.account_label, u.attribution) for u in world.sent]


async def test_declared_labels_win_over_index_and_postgres() -> None:
    world = World(index={CID: "acct-b"}, postgres={CID: ["acct-b"]})
    env_order = v1(data(account_label="acct-a"))
    env_envelope = v1(data())
    env_envelope["accountLabel"] = "acct-a"
    await route(world, v2(data(), "acct-a"), env_order, env_envelope)
    assert attributed(world) == [
        ("acct-a", Attribution.payload),
        ("acct-a", Attribution.order),
        ("acct-a", Attribution.envelope),
    ]
    assert world.lookups == 0


async def test_the_order_index_comes_before_postgres() -> None:
    world = await route(World(index={CID: "acct-a"}, postgres={CID: ["acct-b"]}), v1(data()))
    assert attributed(world) == [("acct-a", Attribution.order_index)]
    assert world.lookups == 0


async def test_an_index_miss_is_resolved_from_postgres() -> None:
    world = await route(World(postgres={CID: ["acct-b"]}), v1(data()))
    assert attributed(world) == [("acct-b", Attribution.database)]


async def test_an_unknown_client_id_is_not_resolved_by_its_alpaca_order_id() -> None:
    world = await route(World(index={OID: "acct-b"}, postgres={OID: ["acct-b"]}), v1(data()))
    assert world.sent == [] and len(world.held) == 1


async def test_an_event_without_client_id_is_resolved_by_its_alpaca_order_id() -> None:
    world = await route(World(postgres={OID: ["acct-b"]}), v1(data(client_order_id=None)))
    assert attributed(world) == [("acct-b", Attribution.database)]


async def test_multi_account_holds_what_nobody_owns_never_the_default_label() -> None:
    world = await route(World(multi_account=True), v1(data()))
    assert world.sent == [] and world.reasons == []
    [row] = world.held
    assert (row.client_order_id, row.alpaca_order_id) == (CID, OID)
    assert (row.source_topic, row.source_offset) == ("t.v1", 0)
    assert row.envelope["payload"]["order"]["client_order_id"] == CID


async def test_single_account_falls_back_to_the_default_label_last() -> None:
    world = await route(World(multi_account=False), v1(data()))
    assert attributed(world) == [("paper", Attribution.default)] and world.held == []


async def test_postgres_down_holds_the_event_after_a_bounded_retry() -> None:
    world = await route(World(postgres_down=True), v1(data()))
    assert world.lookups == 3  # bounded: the feed does not stall on Postgres
    assert world.sent == [] and world.reasons == [] and len(world.held) == 1


async def test_missing_order_identity_and_garbage_are_dead_letters() -> None:
    world = await route(
        World(), v1(data(order_id=None, client_order_id=None)), b"{nope", b"", b'{"payload": 1}'
    )
    assert world.reasons == [
        "missing_order_identity",
        "json_invalid",
        "empty_value",
        "schema_invalid",
    ]
