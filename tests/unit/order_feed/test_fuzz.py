"""Fuzz the trade-update input through the router and the applier: random bytes, mutated
envelopes and field values end as a routed record, a held event or a dead letter with a reason,
never an exception, never a row under a label outside the registry."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.order_feed.fakes import KNOWN, MemoryStore, World, applier, event
from tests.unit.order_feed.helpers import data, v1, v2

LABELS = st.sampled_from([*sorted(KNOWN), "ho-ghost", "HO ALPHA!", "", " ", "a" * 65, "acct-a\n"])
NUMBERS = st.one_of(
    st.sampled_from(["NaN", "Infinity", "-Infinity", "-1", "0", "1e400", "12.5", "1e11"]),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.integers(-(10**14), 10**14),
    st.none(),
)
TIMES = st.sampled_from(
    ["2026-03-02T15:00:00Z", "9999-12-31T23:59:59Z", "2026-03-02T15:30:00Z", "nope", None]
)
FIELDS = st.sampled_from(["qty", "price", "position_qty"])
ORDER_FIELDS = st.sampled_from(["qty", "filled_qty", "filled_avg_price", "limit_price"])


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    env: dict[str, Any] = (
        v2(data(), draw(LABELS)) if draw(st.booleans()) else v1(data(account_label=draw(LABELS)))
    )
    payload = env["payload"]
    for _ in range(draw(st.integers(0, 3))):
        payload[draw(FIELDS)] = draw(NUMBERS)
        payload["order"][draw(ORDER_FIELDS)] = draw(NUMBERS)
    payload["timestamp"] = draw(TIMES)
    if draw(st.booleans()):
        env["accountLabel"] = draw(LABELS)
    if draw(st.booleans()):
        payload["order"]["client_order_id"] = draw(st.sampled_from(["c" * 64, "d" * 64, None]))
    raw = json.dumps(env).encode()
    if draw(st.booleans()):  # byte-level mutation
        position = draw(st.integers(0, len(raw) - 1))
        raw = raw[:position] + draw(st.binary(max_size=3)) + raw[position + 1 :]
    return raw


def _run(records: list[bytes]) -> tuple[World, MemoryStore, list[str]]:
    async def go() -> tuple[World, MemoryStore, list[str]]:
        world = World(index={"c" * 64: "acct-b"}, postgres={"d" * 64: ["ho-ghost"]})
        router = world.router()
        for n, raw in enumerate(records):
            await router.route(event(raw, n))  # type: ignore[arg-type]
        store, dead = MemoryStore(), []
        await applier(store, dead).apply([event(v) for _, v in world.out.records])
        return world, store, dead

    return asyncio.run(go())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(envelopes(), st.binary(max_size=64)), min_size=1, max_size=6))
def test_every_record_is_routed_held_or_dead_lettered_never_under_an_unknown_label(
    records: list[bytes],
) -> None:
    world, store, dead = _run(records)
    # Each input ends exactly one way.
    assert len(world.out.records) + len(world.held) + len(world.dlq.records) == len(records)
    assert all(reason for reason in world.reasons)
    assert {u.account_label for u in world.sent} <= KNOWN
    assert {row.account_label for row in store.rows.values()} <= KNOWN
    assert dead == []  # what the router let through, the applier's guard accepts too
