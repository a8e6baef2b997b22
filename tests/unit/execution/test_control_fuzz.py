"""Hostile records on the control topic, through the control feed's own path (`_apply`): a kill
switch for a known scope, a fail-safe engage, or a dead letter with a reason — never an
exception, never switch state for a label the registry does not know."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codecs import decode_dead_letter, encode_control
from schemas.control import ControlCommand, control_key
from streams.dlq import DeadLetters
from streams.domain.kill_switch import KillSwitchBook
from streams.execution.control_feed import ControlFeed

KNOWN = frozenset({"alpha", "beta"})


class Topic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append(value)


def record(key: bytes | None, value: bytes | None) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord("control", 0, 1, 0, 0, key, value, None, 1, 1, [])


valid = json.loads(
    encode_control(ControlCommand(account="alpha", engaged=True, operator="op", reason="r"))
)
labels = st.sampled_from(["alpha", "beta", "ho-ghost", "HO ALPHA!", "", "*", None])
values = st.one_of(
    st.none(),
    st.binary(max_size=120),
    st.builds(
        lambda field, value: json.dumps({**valid, field: value}).encode(),
        st.sampled_from(sorted(valid)),
        st.one_of(labels, st.integers(), st.booleans(), st.text(max_size=20)),
    ),
)
keys = st.one_of(
    st.none(),
    st.binary(max_size=40),
    labels.map(lambda label: f"kill_switch:{label}".encode()),
)


@settings(max_examples=400, deadline=None)
@given(key=keys, value=values, live=st.booleans())
def test_every_control_record_is_applied_engaged_or_dead_lettered(
    key: bytes | None, value: bytes | None, live: bool
) -> None:
    dlq, book = Topic(), KillSwitchBook()
    feed = ControlFeed("x:1", "control", book, known_accounts=KNOWN, dead_letters=DeadLetters(dlq))
    if live:
        feed._mark_caught_up()
    asyncio.run(feed._apply(record(key, value)))  # never raises
    scopes = set(book.as_dict())
    assert scopes <= {"*", *KNOWN}, scopes  # never state for an unknown label
    for letter in (decode_dead_letter(v) for v in dlq.sent):
        assert letter.reason in {"undecodable_control_record", "unknown_account"}


def test_an_unknown_account_in_an_undecodable_records_key_creates_no_state() -> None:
    dlq, book = Topic(), KillSwitchBook()
    feed = ControlFeed("x:1", "control", book, known_accounts=KNOWN, dead_letters=DeadLetters(dlq))
    asyncio.run(feed._apply(record(b"kill_switch:ho-ghost", b"{not json")))
    asyncio.run(feed._apply(record(b"kill_switch:HO ALPHA!", b"{not json")))
    assert book.as_dict() == {}
    assert [decode_dead_letter(v).reason for v in dlq.sent] == ["undecodable_control_record"] * 2
    asyncio.run(feed._apply(record(b"kill_switch:*", b"{not json")))
    assert set(book.as_dict()) == {"*"}  # an undecodable global record stops every lane
    command = ControlCommand(account="beta", engaged=True, operator="op", reason="r")
    asyncio.run(feed._apply(record(control_key(command), encode_control(command))))
    assert set(book.as_dict()) == {"*", "beta"}
