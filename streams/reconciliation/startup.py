"""Reconciliation at start: a lane trades only once its account has been reconciled with the
broker since its worker started or the lane moved to this worker (a rebalance).

Per owned account, after every table recovery (start, rebalance), in its own task:
1. the lane's account snapshot is refreshed (which checks the label's pinned account number);
2. the REST reconciliation of executions not terminal and decisions left planned/submitting;
3. the account's open broker orders: an order of a known execution is folded in; an order of a
   known decision (a crash after submit) gets its execution; any other is adopted as an
   `external` execution (never cancelled);
4. the broker fills after the account's stored cursor are replayed (`streams.reconciliation.fills`);
   the first time, the cursor and the position baseline are created.
Only then does the lane's gate open (`LaneGates.waits` → None). Until it does, the lane parks the
decisions it gets (`Lane` asks `LaneEnv.lane_waits`); they are made due again the moment the gate
opens. Each attempt is bounded (`timeout`); a failed attempt is retried with exponential backoff
and shows on the lane's status as the health problem `reconciliation_failed`. Accounts run in
tasks of their own: one account's slow or failing reconciliation never delays another lane.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from streams.errors import is_database_unreachable
from streams.observability.readiness import Check
from streams.observability.status import StatusBoard
from streams.persistence.rows import ApplyResult, ExecutionRow, OrderUpdateRow

log = logging.getLogger(__name__)

WAITING = "reconciling"  # why a lane parks a decision while its gate is closed


class GateState(str, enum.Enum):
    pending = "pending"  # owned (or about to be) and not started yet
    reconciling = "reconciling"  # first attempt under way
    retrying = "retrying"  # an attempt failed; the next one after a backoff
    ready = "ready"  # reconciled: the lane trades


@dataclass
class _Gate:
    state: GateState = GateState.pending
    attempts: int = 0
    since: datetime | None = None
    last_error: str | None = None
    next_attempt: datetime | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    def view(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "attempts": self.attempts,
            "since": self.since.isoformat() if self.since else None,
            "last_error": self.last_error,
            "next_attempt": self.next_attempt.isoformat() if self.next_attempt else None,
            "last_result": dict(self.summary),
        }


class LaneGates:
    """Whether each lane may trade yet. Pure state, no I/O; shown on each lane's status."""

    def __init__(
        self,
        board: StatusBoard,
        *,
        enabled: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._board = board
        self.enabled = enabled
        self._clock = clock
        self._gates: dict[str, _Gate] = {}

    def _gate(self, label: str) -> _Gate:
        return self._gates.setdefault(label, _Gate())

    def state(self, label: str) -> GateState:
        return GateState.ready if not self.enabled else self._gate(label).state

    def waits(self, label: str) -> str | None:
        """Why the lane must not trade yet (its decisions are parked), or None."""
        state = self.state(label)
        if state is GateState.ready:
            return None
        return f"{WAITING}: start-up reconciliation {state.value}"

    def _show(self, label: str) -> None:
        self._board.lane(label).set_reconciliation(self._gate(label).view())

    def forget(self, label: str) -> None:
        """The lane is no longer owned here: it reconciles again before it trades here again."""
        self._gates[label] = _Gate()
        self._show(label)

    def started(self, label: str) -> None:
        gate = self._gate(label)
        if gate.state is not GateState.retrying:
            gate.state = GateState.reconciling
        gate.attempts += 1
        gate.since = gate.since or self._clock()
        gate.next_attempt = None
        self._show(label)

    def succeeded(self, label: str, summary: Mapping[str, Any]) -> None:
        gate = self._gate(label)
        gate.state = GateState.ready
        gate.last_error = None
        gate.next_attempt = None
        gate.summary = dict(summary)
        self._show(label)
        self._board.lane(label).set_database_unavailable(None)

    def failed(self, label: str, error: str, retry_at: datetime, *, database: bool = False) -> None:
        """`database`: the attempt failed because Postgres is unreachable, which the lane
        reports as its own problem (`database_unavailable`), not as a broker error."""
        gate = self._gate(label)
        gate.state = GateState.retrying
        gate.last_error = error
        gate.next_attempt = retry_at
        self._show(label)
        if database:
            self._board.lane(label).set_database_unavailable(error)

    def reset(self, labels: Iterable[str]) -> None:
        """A new ownership (start, rebalance): every lane listed reconciles again."""
        for label in labels:
            self._gates[label] = _Gate()
            self._show(label)

    def blocking(self, owned: Iterable[str]) -> list[str]:
        """Owned lanes whose first reconciliation is not finished (readiness waits for them);
        a lane whose attempts fail is a health problem instead (it must not hold a rollout)."""
        if not self.enabled:
            return []
        waiting = (GateState.pending, GateState.reconciling)
        return sorted(label for label in owned if self._gate(label).state in waiting)

    def readiness(self, owned: Iterable[str]) -> Check:
        owned = list(owned)
        waiting = self.blocking(owned)
        failing = sorted(label for label in owned if self.state(label) is GateState.retrying)
        if waiting:
            return Check(False, f"lanes still reconciling: {', '.join(waiting)}")
        if failing:
            return Check(True, f"reconciliation failing (retried): {', '.join(failing)}")
        return Check(True)


class StartupBroker(Protocol):
    async def list_orders(self, status: str = "open") -> list[dict[str, Any]]: ...

    async def positions(self) -> list[dict[str, Any]]: ...


class StartupStore(Protocol):
    async def get_execution(
        self,
        account: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> ExecutionRow | None: ...

    async def decision_exists(self, account: str, decision_hash: str) -> bool: ...

    async def upsert_execution(self, row: ExecutionRow) -> int: ...

    async def adopt_external_order(self, row: ExecutionRow) -> int | None: ...

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult: ...


@dataclass
class OpenOrdersReport:
    open_orders: int = 0
    folded: int = 0
    linked: int = 0  # a known decision's order without an execution (a crash after submit)
    adopted: list[str] = field(default_factory=list)  # broker order ids adopted as external
    skipped: list[str] = field(default_factory=list)


async def reconcile_open_orders(
    account: str,
    orders: Sequence[Mapping[str, Any]],
    store: StartupStore,
    *,
    execution_from: Callable[[str, Mapping[str, Any], datetime], ExecutionRow],
    update_from: Callable[[str, Mapping[str, Any], datetime], OrderUpdateRow],
    now: datetime,
) -> OpenOrdersReport:
    """Every open broker order of `account` is known here afterwards: folded into its execution,
    linked to its decision, or adopted as `external`. Nothing is cancelled; every row is
    written under `account` (the orders were listed with that account's keys)."""
    report = OpenOrdersReport(open_orders=len(orders))
    for raw in orders:
        try:
            row = execution_from(account, raw, now)
            update = update_from(account, raw, now)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            report.skipped.append(f"{raw.get('id')}: {type(exc).__name__}")
            log.warning(
                "open broker order not readable: %s",
                type(exc).__name__,
                extra={"account": account, "order_id": raw.get("id")},
            )
            continue
        known = await store.get_execution(
            account, client_order_id=row.client_order_id, alpaca_order_id=row.alpaca_order_id
        )
        if known is None and await store.decision_exists(account, row.client_order_id):
            await store.upsert_execution(row)
            report.linked += 1
        elif known is None and await store.adopt_external_order(row) is not None:
            report.adopted.append(row.alpaca_order_id or row.client_order_id)
            log.warning(
                "broker order not placed by this system adopted as external",
                extra={
                    "account": account,
                    "order_id": row.alpaca_order_id,
                    "client_order_id": row.client_order_id,
                    "symbol": row.symbol,
                },
            )
        await store.apply_order_update(update)
        report.folded += 1
    return report


def position_quantities(positions: Iterable[Mapping[str, Any]]) -> dict[str, Decimal]:
    """Symbol → signed quantity of broker positions (`qty` is signed for shorts)."""
    out: dict[str, Decimal] = {}
    for position in positions:
        symbol = str(position.get("symbol") or "")
        if not symbol:
            continue
        qty = Decimal(str(position.get("qty") or "0"))
        if str(position.get("side") or "").lower() == "short" and qty > 0:
            qty = -qty
        out[symbol] = out.get(symbol, Decimal(0)) + qty
    return out


Attempt = Callable[[str], Awaitable[Mapping[str, Any]]]


class StartupReconciliation:
    """Runs each owned account's reconciliation at start in a task of its own, bounded and
    retried, and opens its lane's gate when it succeeds (`on_ready`)."""

    def __init__(
        self,
        gates: LaneGates,
        attempt: Attempt,
        *,
        timeout: float,
        on_ready: Callable[[str], object] = lambda label: None,
        backoff_base: float = 1.0,
        backoff_cap: float = 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.gates = gates
        self._attempt = attempt
        self._timeout = timeout
        self._on_ready = on_ready
        self._base = backoff_base
        self._cap = backoff_cap
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def upkeep(self, owned: Iterable[str], known: Iterable[str], resumed: bool) -> None:
        """Every lanes upkeep tick. After a start or rebalance (`resumed`) every owned lane
        reconciles again (a run in progress is restarted); lanes of `known` not owned now are
        forgotten (they reconcile before trading here again); an owned lane never started
        (ownership seen late) starts now."""
        owned = set(owned)
        for label in known:
            if label not in owned and (label in self._tasks or resumed):
                self._cancel(label)
                self.gates.forget(label)
        if not self.gates.enabled:
            return
        for label in sorted(owned):
            if resumed:
                self._cancel(label)
                self.gates.reset([label])
            elif label in self._tasks or self.gates.state(label) is GateState.ready:
                continue
            self._tasks[label] = asyncio.create_task(
                self._run(label), name=f"startup-reconcile:{label}"
            )

    def running(self, label: str) -> bool:
        task = self._tasks.get(label)
        return task is not None and not task.done()

    def _cancel(self, label: str) -> None:
        task = self._tasks.pop(label, None)
        if task is not None and not task.done():
            task.cancel()

    def retry_delay(self, failures: int) -> float:
        return float(min(self._cap, self._base * 2 ** max(0, failures - 1)))

    async def _run(self, label: str) -> None:
        failures = 0
        while True:
            self.gates.started(label)
            try:
                summary = await asyncio.wait_for(self._attempt(label), self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried; one account never stops others
                failures += 1
                delay = self.retry_delay(failures)
                error = _describe(exc)
                self.gates.failed(
                    label,
                    error,
                    self._clock() + timedelta(seconds=delay),
                    database=is_database_unreachable(exc)
                    or getattr(exc, "database", False) is True,
                )
                log.warning(
                    "start-up reconciliation of %s failed (%s); retry in %.0fs",
                    label,
                    error,
                    delay,
                    extra={"account": label, "attempt": failures},
                )
                await asyncio.sleep(delay)
                continue
            self.gates.succeeded(label, summary)
            log.info("start-up reconciliation done", extra={"account": label, **summary})
            self._on_ready(label)
            return

    async def close(self) -> None:
        for label in list(self._tasks):
            self._cancel(label)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    kind = getattr(getattr(exc, "kind", None), "value", None)
    return f"{type(exc).__name__}:{kind}" if kind else type(exc).__name__
