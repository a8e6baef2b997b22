"""Hostile records on the decisions topic, through the lanes agent's own path (`LanesRunner.take`
with a real `LaneService`): every record ends as a lane's ledger entry or a dead letter with a
reason — never an exception, never an order from an invalid record, never an order under
another account."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codecs import decode_dead_letter, decode_decision, encode_decision
from streams.broker.pool import BrokerPool
from streams.dlq import DeadLetters
from streams.domain.accounts import AccountRegistry
from streams.domain.kill_switch import KillSwitchBook
from streams.domain.ledger import ledger_key
from streams.execution.orchestration import LanesRunner, ReadDecision
from streams.execution.service import LaneService
from streams.observability.status import StatusBoard
from streams.settings import Settings
from tables.durable import ChangelogAcks
from tests.unit.execution.fakes import (
    Clock,
    FakeBroker,
    Journal,
    MemoryIndex,
    MemoryLedger,
    MemorySink,
    account,
    flags,
    make_decision,
)
from tests.unit.execution.test_service import MemoryCursors

LABELS = ("alpha", "beta")


class Message:
    def __init__(self, value: bytes) -> None:
        self.topic, self.partition, self.offset = "decisions", 0, 1
        self.key: bytes | None = b"alpha"
        self.value = value


class Event:  # faust keeps a weak reference to the current event
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.message = Message(value)


class RecordingTopic:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, *, key: bytes | None, value: bytes) -> None:
        self.sent.append(value)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        settings_ = Settings(TORGHUT_DATA_DIR=str(tmp_path), TRADING_PRICE_COLLAR_BPS=0)  # type: ignore[call-arg]
        journal, self.clock = Journal(), Clock()
        self.ledger = MemoryLedger(journal)
        self.sink = MemorySink(journal)
        registry = AccountRegistry(accounts=tuple(account(x) for x in LABELS), source="fuzz")
        self.service = LaneService(
            settings_,
            registry,
            ledger=self.ledger,
            index=MemoryIndex(),
            cursors=MemoryCursors(),
            sink=self.sink,  # type: ignore[arg-type]
            brokers=BrokerPool(settings_),
            flags=flags,
            book=KillSwitchBook(),
            board=StatusBoard(clock=self.clock),
            clock=self.clock,
        )
        self.brokers = {label: FakeBroker(journal) for label in LABELS}
        for label, lane in self.service.lanes.items():
            lane.broker = self.brokers[label]
        self.dlq = RecordingTopic()
        self.runner = LanesRunner(
            self.service,
            ledger=self.ledger,  # type: ignore[arg-type]
            acks=ChangelogAcks(),
            control=None,  # type: ignore[arg-type]
            dead_letters=DeadLetters(self.dlq, "fuzz"),
            retries=None,  # type: ignore[arg-type]
            owned_accounts=lambda: set(LABELS),
        )


def mutations() -> st.SearchStrategy[bytes]:
    valid = json.loads(encode_decision(make_decision()))
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=30),
        st.sampled_from(["NaN", "-1", "1e400", "beta", "HO ALPHA!", "ho-ghost", "sell", ""]),
    )
    mutated = st.builds(
        lambda field, value, drop: {
            **{k: v for k, v in valid.items() if k != drop},
            **({field: value} if field else {}),
        },
        st.sampled_from([None, *valid]),
        values,
        st.sampled_from([None, *valid]),
    ).map(lambda body: json.dumps(body, default=str).encode())
    return st.one_of(st.binary(max_size=200), mutated, st.just(encode_decision(make_decision())))


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=mutations())
def test_every_record_is_taken_or_dead_lettered(tmp_path: Path, raw: bytes) -> None:
    rig = Rig(tmp_path)
    read = ReadDecision.of(Event(raw))  # type: ignore[arg-type]
    asyncio.run(rig.runner.take(read))  # never raises

    orders = {label: list(broker.orders.values()) for label, broker in rig.brokers.items()}
    if read.decision is None:
        (letter,) = [decode_dead_letter(v) for v in rig.dlq.sent]
        assert letter.reason and letter.value == raw[: len(letter.value or b"")]
        assert not any(orders.values()) and rig.ledger.rows == {}
        return
    decision = decode_decision(raw)
    if decision.account_label not in LABELS:
        (letter,) = [decode_dead_letter(v) for v in rig.dlq.sent]
        assert letter.reason == "unknown_account" and not any(orders.values())
        return
    assert rig.dlq.sent == []
    entry = rig.ledger.get(ledger_key(decision.account_label, decision.decision_hash))
    assert entry is not None and (entry.terminal or entry.retry_at is not None)
    for label, placed in orders.items():
        if label != decision.account_label:
            assert placed == []  # never an order under another account
        for order in placed:
            assert order["client_order_id"] == decision.decision_hash
            assert Decimal(order["qty"]) > 0


def test_a_valid_decision_reaches_its_own_broker_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    decision = make_decision(account="beta")
    asyncio.run(rig.runner.take(ReadDecision.of(Event(encode_decision(decision)))))  # type: ignore[arg-type]
    assert [o["client_order_id"] for o in rig.brokers["beta"].orders.values()] == [
        decision.decision_hash
    ]
    assert rig.brokers["alpha"].orders == {}


def test_unknown_and_disabled_accounts_are_told_apart(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.service.known_accounts = frozenset({*LABELS, "gamma"})  # gamma: configured, disabled
    for label in ("gamma", "ho-ghost"):
        raw = encode_decision(make_decision(account=label))
        asyncio.run(rig.runner.take(ReadDecision.of(Event(raw))))  # type: ignore[arg-type]
    reasons = [decode_dead_letter(v).reason for v in rig.dlq.sent]
    assert reasons == ["account_not_enabled", "unknown_account"]


def test_a_forged_hash_is_dead_lettered(tmp_path: Path) -> None:
    """A decision whose hash does not match its identity is refused, not traded."""
    body: dict[str, Any] = json.loads(encode_decision(make_decision()))
    body["decision_hash"] = "0" * 64
    rig = Rig(tmp_path)
    asyncio.run(rig.runner.take(ReadDecision.of(Event(json.dumps(body).encode()))))  # type: ignore[arg-type]
    (letter,) = [decode_dead_letter(v) for v in rig.dlq.sent]
    assert letter.reason == "decision_hash_mismatch"
    assert rig.brokers["alpha"].orders == {}
