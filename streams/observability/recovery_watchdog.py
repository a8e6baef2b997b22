"""Recovery watchdog: a table recovery that does not finish in time stops the worker.

faust's table recovery (after start and after every rebalance) can stall without failing: a
changelog partition that never answers, a consumer that stopped fetching. The worker then stays
not ready forever, its partitions assigned to it and processed by nobody. Past
`TORGHUT_RECOVERY_WATCHDOG_SECONDS` of one unfinished recovery the watchdog logs why (records
still to restore, how long) and exits non-zero (`exit_worker`, reason `recovery_stuck`); the
orchestrator restarts the worker and the group reassigns its partitions. The bulk restore has its
own, shorter watchdog (`streams.state.restore`); this one covers recovery as a whole.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streams.errors import exit_worker, guarded

log = logging.getLogger(__name__)

RECOVERY_STUCK = "recovery_stuck"


@dataclass(frozen=True)
class RecoveryState:
    recovering: bool  # a recovery started and has not finished
    remaining: int  # active changelog records left to restore (for the reason only)


class RecoveryWatchdog:
    def __init__(
        self,
        state: Callable[[], RecoveryState],
        limit_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        give_up: Callable[[str], None] = exit_worker,
    ) -> None:
        self._state = state
        self.limit = limit_seconds  # <= 0: disabled
        self._clock = clock
        self._give_up = give_up
        self.started_at: float | None = None  # when the current recovery was first seen

    def check(self) -> None:
        """One look: start the clock when a recovery is seen, reset it when it finished, give
        up once it ran past the limit."""
        if self.limit <= 0:
            return
        state = self._state()
        now = self._clock()
        if not state.recovering:
            self.started_at = None
            return
        if self.started_at is None:
            self.started_at = now
            return
        elapsed = now - self.started_at
        if elapsed > self.limit:
            reason = (
                f"{RECOVERY_STUCK}: table recovery not finished after {elapsed:.0f}s "
                f"(limit TORGHUT_RECOVERY_WATCHDOG_SECONDS={self.limit:.0f}s, "
                f"{state.remaining} active changelog records left)"
            )
            log.error("%s", reason)
            self._give_up(reason)

    async def tick(self) -> None:
        self.check()

    async def run_forever(self, interval: float) -> None:
        """Check every `interval` seconds until cancelled; a failed check is logged and counted
        (`guarded`), never crashes the worker."""
        while True:
            await guarded("recovery-watchdog", self.tick)
            await asyncio.sleep(interval)
