"""Run profiles (quick, full) and the context every benchmark receives."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.support import Databases, delete_topics
from tests.support.stack import StackInfo


@dataclass(frozen=True)
class Profile:
    name: str
    signals: int  # B1/B2: backlog of Avro signals
    peer_signals: int  # B6: backlog of Avro signals through the worker and its peers
    accounts: int  # K of B2 and B3
    # Share of signals on which the strategy emits an intent (each fanned out to every account).
    # 0.5%: at 500 signals/s that is 2.5 orders/s per account, inside the lane's Alpaca budget
    # of 190 requests/min (3.2/s); 2,000 signals/s (10 orders/s per account) is beyond it.
    intent_fraction: float
    symbols: int  # universe size (signals go round-robin over it)
    rates: tuple[int, ...]  # B3: signals/s
    load_seconds: float  # B3: duration of each fixed-rate load
    drain_seconds: float  # B3/B4: how long the backlog may take to clear after the load
    scaling_accounts: tuple[int, ...]  # B4
    scaling_decisions: int  # B4: decisions per K
    ledger_keys: int  # B5
    recovery_accounts: int  # B5: accounts the ledger keys belong to

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


QUICK = Profile(
    name="quick",
    signals=10_000,
    peer_signals=30_000,
    accounts=10,
    intent_fraction=0.005,
    symbols=500,
    rates=(500, 2000),
    load_seconds=8.0,
    drain_seconds=60.0,
    scaling_accounts=(1, 10, 100),
    scaling_decisions=400,
    # B5 projects 1M keys from this: large enough that the bulk restore's fixed start-up (child
    # processes, consumer connections) does not dominate the measured rate.
    ledger_keys=100_000,
    recovery_accounts=10,
)

FULL = Profile(
    name="full",
    signals=100_000,
    peer_signals=100_000,
    accounts=10,
    intent_fraction=0.005,
    symbols=500,
    rates=(500, 2000),
    load_seconds=60.0,
    drain_seconds=180.0,
    scaling_accounts=(1, 10, 100),
    scaling_decisions=2000,
    ledger_keys=1_000_000,
    recovery_accounts=10,
)

PROFILES = {p.name: p for p in (QUICK, FULL)}


@dataclass
class Context:
    stack: StackInfo
    profile: Profile
    workdir: Path
    databases: Databases
    app_ids: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)  # figures one benchmark gives another

    def data_dir(self, name: str) -> Path:
        path = self.workdir / name
        shutil.rmtree(path, ignore_errors=True)
        return path

    def track(self, app_id: str) -> str:
        """Remember an app id (topic prefix) so that its topics are deleted after the run."""
        self.app_ids.append(app_id)
        return app_id

    async def cleanup(self) -> None:
        for app_id in self.app_ids:
            await delete_topics(self.stack, app_id)
        self.app_ids.clear()
        await self.databases.drop_all()
