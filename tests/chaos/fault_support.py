"""Shared tools of the fault scenarios (c), (e)-(h) and the order-feed bound: fresh decisions
and a long-lived producer (signal→ack latency starts at the decision's event time), the lane
ledger read back from its changelog, broker orders counted per client order id, a TCP proxy in
front of the real Postgres that can refuse every connection, Kafka paused in place (SIGSTOP),
latency percentiles and the one printed block of counts every scenario ends with.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiokafka import AIOKafkaProducer

from schemas.codecs import encode_decision
from schemas.decision import AccountDecision, Action
from streams.domain.hashing import decision_hash
from streams.domain.ledger import LedgerEntry, decode_entry
from tests.integration.lanes.helpers import KEYS, topic_values
from tests.support.stack import ROOT, StackInfo

PRICES = {"AAPL": "100", "MSFT": "200", "BTC/USD": "50000"}


# ------------------------------------------------------------------------------ decisions
class Decisions:
    """Decisions whose event time is *now* (the signal time of the latency), unique per account
    (two decisions of one account never share a millisecond, so never a hash or signal slot)."""

    def __init__(self, strategy: str = "chaos") -> None:
        self._strategy = strategy
        self._last: dict[str, datetime] = {}

    def make(
        self, account: str, symbol: str = "AAPL", notional: str = "200", **update: Any
    ) -> AccountDecision:
        now = datetime.now(UTC)
        now = now.replace(microsecond=now.microsecond // 1000 * 1000)
        last = self._last.get(account)
        if last is not None and now <= last:
            now = last + timedelta(milliseconds=1)
        self._last[account] = now
        identity = {
            "account_label": account,
            "symbol": symbol,
            "timeframe": "1Sec",
            "event_ts": now,
            "action": "buy",
        }
        d = AccountDecision(
            decision_hash=decision_hash(**identity),
            strategy_id=self._strategy,
            symbol=symbol,
            timeframe="1Sec",
            account_label=account,
            event_ts=now,
            action=Action.buy,
            notional=Decimal(notional),
            confidence=0.9,
            price=Decimal(PRICES[symbol]),
            emitted_at=datetime.now(UTC),
        )
        return d.model_copy(update=update) if update else d


class Sender:
    """One producer for the whole scenario (a producer per send would add its start-up to the
    measured latency). Records are keyed by account, as the decisions topic is."""

    def __init__(self, stack: StackInfo, topic: str) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=stack.bootstrap, acks="all", linger_ms=0
        )
        self._topic = topic

    async def __aenter__(self) -> Sender:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    async def send(self, *decisions: AccountDecision) -> None:
        futures = [
            await self._producer.send(
                self._topic, key=d.account_label.encode(), value=encode_decision(d)
            )
            for d in decisions
        ]
        for fut in futures:
            await fut

    async def send_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        await (await self._producer.send(topic, key=key, value=value))


def sim_accounts(labels: Sequence[str], cash: str = "10000000") -> dict[str, Any]:
    """Simulator config of `labels` (keys of tests.integration.lanes.helpers.KEYS)."""
    return {
        "accounts": [
            {"label": x, "key": KEYS[x][0], "secret": KEYS[x][1], "cash": cash} for x in labels
        ]
    }


def log_counts(lines: Sequence[str], needles: Sequence[str]) -> dict[str, int]:
    """How many worker log lines contain each needle."""
    return {n: sum(1 for line in lines if n in line) for n in needles}


# ------------------------------------------------------------------------------ reading back
async def ledger(stack: StackInfo, app_id: str, idle: float = 1.5) -> dict[str, LedgerEntry]:
    """decision hash → its latest lane-ledger entry, read from the ledger's changelog."""
    latest: dict[str, LedgerEntry] = {}
    for value in await topic_values(stack, f"{app_id}-lane-ledger-changelog", idle=idle):
        if not value.startswith(b"{"):
            continue  # a signal-slot record or anything else that is not an entry
        try:
            entry = decode_entry(value)
        except ValueError:
            continue
        latest[entry.decision_hash] = entry
    return latest


def signal_to_ack_s(entry: LedgerEntry) -> float | None:
    """Signal (decision event time) → broker acknowledgement, from a `submitted` entry."""
    if entry.submitted_at is None:
        return None
    return (entry.submitted_at - entry.decision.event_ts).total_seconds()


def orders_by_client_id(admin: Any, labels: Sequence[str]) -> dict[str, Counter[str]]:
    """Per account: client order id → how many broker orders carry it (the simulator's view)."""
    return {
        label: Counter(str(o["client_order_id"]) for o in admin.orders(label)) for label in labels
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ranked = sorted(values)
    rank = max(1, min(len(ranked), int(-(-q * len(ranked) // 100))))
    return ranked[rank - 1]


def latency_line(values: Sequence[float]) -> str:
    if not values:
        return "n=0"
    return (
        f"n={len(values)} p50={percentile(values, 50) * 1000:.0f}ms "
        f"p95={percentile(values, 95) * 1000:.0f}ms max={max(values) * 1000:.0f}ms"
    )


def report(scenario: str, counts: Mapping[str, object]) -> None:
    """The one block of what a scenario counted (shown with `-s`, and in a failure's output)."""
    width = max(len(k) for k in counts) if counts else 0
    lines = [f"==== chaos {scenario} ===="]
    lines += [f"  {k.ljust(width)} : {v}" for k, v in counts.items()]
    lines.append("=" * len(lines[0]))
    print("\n" + "\n".join(lines), flush=True)


def summary_of_orders(orders: Mapping[str, Counter[str]], hashes: Sequence[str]) -> str:
    """`label: N orders, M client ids, max K per id` for the decisions `hashes`."""
    wanted = set(hashes)
    parts = []
    for label, per_id in orders.items():
        mine = {k: v for k, v in per_id.items() if k in wanted}
        most = max(mine.values(), default=0)
        parts.append(f"{label}: {sum(mine.values())} orders/{len(mine)} ids, max {most}/id")
    return "; ".join(parts)


# ------------------------------------------------------------------------------ faults
def stack_dir() -> Path:
    return Path(os.environ.get("TORGHUT_STACK_DIR") or ROOT / ".cache" / "stack").resolve()


def kafka_pid() -> int:
    """The local stack's Kafka broker (stack/stack.py writes its PID file)."""
    pid_file = stack_dir() / "kafka" / "kafka.pid"
    pid = int(pid_file.read_text().split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert b"server.properties" in cmdline, f"pid {pid} is not the stack's Kafka"
    return pid


@contextmanager
def kafka_paused() -> Iterator[float]:
    """Kafka frozen in place (SIGSTOP): every request waits, nothing fails; SIGCONT after.
    Yields the monotonic time it was paused at."""
    pid = kafka_pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield time.monotonic()
    finally:
        os.kill(pid, signal.SIGCONT)


class TcpProxy:
    """A TCP proxy on a free local port in front of `target` (the real Postgres). `block()`
    breaks every open connection and refuses new ones (accepted, then closed at once: a
    connection reset to the client) until `unblock()`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self.blocked = False
        self.refused = 0  # connections refused while blocked
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    @classmethod
    def for_dsn(cls, dsn: str) -> TcpProxy:
        parts = urlsplit(dsn)
        return cls((parts.hostname or "127.0.0.1", parts.port or 5432))

    def dsn(self, dsn: str) -> str:
        """`dsn` through this proxy."""
        parts = urlsplit(dsn)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))

    def block(self) -> None:
        with self._lock:
            self.blocked = True
            for sock in list(self._open):
                _close(sock)
            self._open.clear()

    def unblock(self) -> None:
        with self._lock:
            self.blocked = False

    def close(self) -> None:
        self._closed = True
        self.block()
        _close(self._listener)

    def _accept(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._listener], [], [], 0.2)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                if self.blocked:
                    self.refused += 1
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    _close(client)
                    continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                if self._closed:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            with self._lock:
                self._open.discard(a)
                self._open.discard(b)
            _close(a)
            _close(b)


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.close()


def as_json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)
