"""In-memory stand-ins for the lane's ports (ledger, index, sink, broker) and builders."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from schemas.control import ControlCommand
from schemas.decision import AccountDecision, Action
from streams.domain.accounts import Account, AccountMode
from streams.domain.hashing import decision_hash
from streams.domain.ledger import LedgerEntry
from streams.domain.risk import RiskPolicy
from streams.domain.sizing import AccountSnapshot, OrderPlan
from streams.execution.crash import CrashPoints
from streams.execution.lane import Lane, LaneEnv
from streams.flags import ALL_KEYS, GLOBAL_ENTITY, KILL_SWITCH, EntityFlags, FlagSnapshot
from streams.observability.status import LaneStatus
from streams.settings import Settings

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def make_decision(
    account: str = "alpha",
    symbol: str = "AAPL",
    action: str = "buy",
    notional: str = "1000",
    price: str | None = "100",
    event_ts: datetime = T0,
    strategy: str = "s1",
    **extra: Any,
) -> AccountDecision:
    identity = {
        "account_label": account,
        "symbol": symbol,
        "timeframe": "1Sec",
        "event_ts": event_ts,
        "action": action,
    }
    return AccountDecision(
        decision_hash=decision_hash(**identity),
        strategy_id=strategy,
        symbol=symbol,
        timeframe="1Sec",
        account_label=account,
        event_ts=event_ts,
        action=Action(action),
        notional=Decimal(notional),
        confidence=0.8,
        price=Decimal(price) if price is not None else None,
        emitted_at=event_ts,
        **extra,
    )


def snapshot(
    account: str = "alpha",
    equity: str = "100000",
    buying_power: str = "100000",
    holdings: dict[str, tuple[str, str]] | None = None,
    at: datetime = T0,
) -> AccountSnapshot:
    positions = [
        {"symbol": s, "qty": q, "market_value": v} for s, (q, v) in (holdings or {}).items()
    ]
    body = {"equity": equity, "cash": equity, "buying_power": buying_power}
    return AccountSnapshot.from_alpaca(account, body, positions, at)


def flags(kill_for: str | None = None, available: bool = True) -> FlagSnapshot:
    """Every enabler on; the kill switch flag on for `kill_for` (a lane label) if given."""
    if not available:
        return FlagSnapshot.unavailable("flipt down", (GLOBAL_ENTITY, "torghut:alpha"))
    values = {key: key != KILL_SWITCH for key in ALL_KEYS}
    entities = {GLOBAL_ENTITY: EntityFlags(GLOBAL_ENTITY, values)}
    for label in ("alpha", "beta"):
        lane = {KILL_SWITCH: label == kill_for}
        entities[f"torghut:{label}"] = EntityFlags(f"torghut:{label}", lane)
    return FlagSnapshot(entities)


def account(label: str = "alpha", mode: AccountMode = AccountMode.paper) -> Account:
    return Account(
        label=label,
        mode=mode,
        api_key=SecretStr("key"),
        secret_key=SecretStr("secret"),
        base_url="http://127.0.0.1:9",
    )


@dataclass
class Journal:
    """The order in which side effects happened, across every fake."""

    events: list[str] = field(default_factory=list)


class MemoryLedger:
    def __init__(self, journal: Journal) -> None:
        self.rows: dict[str, LedgerEntry] = {}
        self.slots: dict[tuple[str, str], str] = {}
        self.journal = journal
        # state -> an event a durable write of that state waits for (Kafka slow or down)
        self.hold: dict[str, asyncio.Event] = {}

    def get(self, key: str) -> LedgerEntry | None:
        return self.rows.get(key)

    async def put(self, entry: LedgerEntry, *, durable: bool = True) -> None:
        self.rows[entry.key] = entry
        if durable:
            held = self.hold.get(entry.state.value)
            if held is not None:
                await held.wait()
            self.journal.events.append(f"ledger:{entry.state.value}")

    def slot_owner(self, account_label: str, slot: str) -> str | None:
        return self.slots.get((account_label, slot))

    def take_slot(self, account_label: str, slot: str, decision_hash: str) -> None:
        self.slots[(account_label, slot)] = decision_hash


class MemoryIndex:
    def __init__(self) -> None:
        self.owner: dict[str, str] = {}

    def remember(
        self,
        account_label: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> None:
        for key in (client_order_id, alpaca_order_id):
            if key:
                self.owner[key] = account_label


class MemorySink:
    def __init__(self, journal: Journal) -> None:
        self.rows: list[tuple[str, str]] = []
        self.snapshots: list[AccountSnapshot] = []
        self.pins: dict[str, str] = {}
        self.fail: dict[str, int] = {}  # state (or "*") -> how many writes fail
        # decision hash -> the error Postgres answers for its rows (a poison row)
        self.poison: dict[str, BaseException] = {}
        self.journal = journal
        # state -> an event a row write of that state waits for (Postgres slow)
        self.hold: dict[str, asyncio.Event] = {}

    async def persist(self, entry: LedgerEntry) -> None:
        held = self.hold.get(entry.state.value)
        if held is not None:
            await held.wait()
        for key in (entry.state.value, "*"):
            if self.fail.get(key):
                self.fail[key] -= 1
                raise ConnectionError("database down")
        if entry.decision_hash in self.poison:
            raise self.poison[entry.decision_hash]
        self.rows.append((entry.decision_hash, entry.state.value))
        self.journal.events.append(f"db:{entry.state.value}")

    async def snapshot(self, snap: AccountSnapshot, positions: list[dict[str, Any]]) -> None:
        self.snapshots.append(snap)

    async def pin_account(self, account_label: str, account_number: str) -> str:
        if self.fail.get("pin"):
            self.fail["pin"] -= 1
            raise ConnectionError("database down")
        return self.pins.setdefault(account_label, account_number)


Outcome = dict[str, Any] | BaseException | None


class FakeBroker:
    """Scripted answers per call; orders it accepted are kept like a broker would."""

    def __init__(self, journal: Journal, snap: AccountSnapshot | None = None) -> None:
        self.journal = journal
        self.orders: dict[str, dict[str, Any]] = {}
        self.script: dict[str, deque[Callable[[], Outcome]]] = {}
        self.calls: list[str] = []
        snap = snap or snapshot()
        self.account_body = {
            "equity": str(snap.equity),
            "cash": str(snap.cash),
            "buying_power": str(snap.buying_power),
            "account_number": "PA0000000001",
        }

    def then(self, call: str, *outcomes: Callable[[], Outcome]) -> FakeBroker:
        self.script.setdefault(call, deque()).extend(outcomes)
        return self

    def _scripted(self, call: str) -> Outcome | str:
        self.calls.append(call)
        queue = self.script.get(call)
        if queue:
            result = queue.popleft()()
            if isinstance(result, BaseException):
                raise result
            return result
        return "default"

    def accept(self, plan: OrderPlan) -> dict[str, Any]:
        order = {
            "id": str(uuid.uuid4()),
            "client_order_id": plan.client_order_id,
            "symbol": plan.symbol,
            "qty": str(plan.qty),
            "status": "accepted",
        }
        self.orders[plan.client_order_id] = order
        return order

    async def submit_order(self, plan: OrderPlan) -> dict[str, Any]:
        self.journal.events.append("broker:submit")
        result = self._scripted("submit")
        if result == "default":
            return self.accept(plan)
        assert isinstance(result, dict)
        return result

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        result = self._scripted("lookup")
        if result == "default":
            return self.orders.get(client_order_id)
        return result if isinstance(result, dict) else None

    async def account(self) -> dict[str, Any]:
        result = self._scripted("account")
        return self.account_body if result == "default" else dict(result or {})

    async def positions(self) -> list[dict[str, Any]]:
        return []

    async def cancel_open_orders(self) -> list[dict[str, Any]]:
        self.calls.append("cancel")
        return [{"id": "x"}]


@dataclass
class Rig:
    lane: Lane
    broker: FakeBroker
    ledger: MemoryLedger
    sink: MemorySink
    index: MemoryIndex
    clock: Clock
    journal: Journal
    controls: dict[str, Any]


def rig(
    tmp_path: Path,
    *,
    label: str = "alpha",
    settings: Settings | None = None,
    mode: AccountMode = AccountMode.paper,
) -> Rig:
    journal = Journal()
    clock = Clock()
    ledger, sink, index = MemoryLedger(journal), MemorySink(journal), MemoryIndex()
    broker = FakeBroker(journal)
    controls: dict[str, Any] = {"flags": flags(), "kill": None, "disabled": set()}
    settings = settings or Settings(TRADING_PRICE_COLLAR_BPS=0)  # type: ignore[call-arg]

    def kill_command(lane_label: str) -> ControlCommand | None:
        command: ControlCommand | None = controls["kill"]
        return command if command is not None and command.applies_to(lane_label) else None

    env = LaneEnv(
        ledger=ledger,
        index=index,
        sink=sink,
        policy=RiskPolicy.from_settings(settings),
        flags=lambda: controls["flags"],
        kill_command=kill_command,
        strategy_enabled=lambda sid: sid not in controls["disabled"],
        crash=CrashPoints(None, tmp_path),
        clock=clock,
    )
    lane = Lane(account(label, mode), broker, env, LaneStatus(label, clock=clock))
    return Rig(lane, broker, ledger, sink, index, clock, journal, controls)
