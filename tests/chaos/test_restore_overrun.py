"""(h) A bulk restore that overruns: the worker process exits non-zero with the reason logged,
instead of leaving faust's recovery stopped (a worker that stays not-ready for ever), and a
worker restarted on the same data dir becomes ready.

A worker whose ledger changelog holds 6,000 keys starts with an empty data dir, so it bulk
restores. The restore's final flush is made to block the event loop for 60 s (the test-only
fault `TORGHUT_FAULT_RESTORE_FLUSH_STALL_SECONDS`, what a stuck RocksDB flush does): no asyncio
timeout can fire then, only the restore's watchdog thread. faust's step timeout
(`BROKER_REQUEST_TIMEOUT`) is 10 s here, so the restore must be given up after 0.95 x 10 s.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from streams.errors import EX_SOFTWARE
from tests.chaos.fault_support import report
from tests.integration.state.test_bulk_restore import SMALL, bulk_restored, filled_ledger
from tests.support.stack import StackInfo
from tests.support.worker import Worker

pytestmark = pytest.mark.integration

STEP_TIMEOUT = 10.0  # faust's broker_request_timeout (its recovery step timeout)
STALL = 60.0


async def test_h_an_overrunning_bulk_restore_exits_and_a_restart_becomes_ready(
    stack: StackInfo, workers: list[Worker], tmp_path: Path
) -> None:
    env, changes, _ = await filled_ledger(stack, "chaos-h", 0, SMALL)
    env["BROKER_REQUEST_TIMEOUT"] = str(STEP_TIMEOUT)
    data = tmp_path / "data"

    stalled = Worker(
        stack,
        {**env, "TORGHUT_FAULT_RESTORE_FLUSH_STALL_SECONDS": str(STALL)},
        data,
        "overrun",
    ).start()
    workers.append(stalled)
    started = time.monotonic()
    code = await asyncio.to_thread(stalled.wait_exit, 120)
    exited_after = time.monotonic() - started
    stall_at = [line for line in stalled.lines if "bulk restore flush stalls" in line]
    exit_lines = [line for line in stalled.lines if "bulk_restore_overrun" in line]
    was_ready = any("[^Worker]: Ready" in line for line in stalled.lines)

    restarted = Worker(stack, env, data, "restarted").start()
    workers.append(restarted)
    again = time.monotonic()
    restarted.wait_ready(120)
    ready_after = time.monotonic() - again
    restores = bulk_restored(restarted)
    report(
        "(h) bulk restore overrun",
        {
            "changelog records": len(changes),
            "step timeout / hard limit": f"{STEP_TIMEOUT:.0f}s / {0.95 * STEP_TIMEOUT:.1f}s",
            "stalled worker exit code": code,
            "exited after start": f"{exited_after:.1f}s (stall of {STALL:.0f}s injected)",
            "reason logged": exit_lines[-1] if exit_lines else None,
            "restarted worker ready after": f"{ready_after:.1f}s",
            "restarted bulk restores (done, wanted, processes)": restores,
        },
    )
    assert stall_at, "the fault did not fire: no bulk restore ran"
    assert code == EX_SOFTWARE
    assert exit_lines and "not finished within" in exit_lines[-1]
    assert not was_ready
    assert exited_after < STALL  # it did not sit out the stall
    assert ready_after < 120
    assert restarted.get("/readyz").status_code == 200
