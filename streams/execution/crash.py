"""Test-only crash points on the submit path (`TORGHUT_CRASH_AT`).

At the named step the worker dies like a `kill -9` (`os._exit(137)`: no shutdown, no offset
commit, nothing flushed). It happens once per data dir: a marker file is written first, so the
restarted worker (same environment) runs through. Never set in production.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

CRASH_POINTS = ("before_ledger_write", "after_submit", "before_persist", "before_commit")
CRASH_EXIT_CODE = 137


class CrashPoints:
    def __init__(self, crash_at: str | None, data_dir: Path) -> None:
        if crash_at is not None and crash_at not in CRASH_POINTS:
            raise ValueError(f"TORGHUT_CRASH_AT must be one of {', '.join(CRASH_POINTS)}")
        self._crash_at = crash_at
        self._marker = data_dir / f"crashed-{crash_at}" if crash_at else None

    def point(self, name: str) -> None:
        if name != self._crash_at or self._marker is None or self._marker.exists():
            return
        self._marker.parent.mkdir(parents=True, exist_ok=True)
        self._marker.write_text(name)
        log.critical("crash point %s: exiting now (TORGHUT_CRASH_AT)", name)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(CRASH_EXIT_CODE)
