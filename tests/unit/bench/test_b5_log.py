"""B5 reads restore times from the restarted worker's log (bulk restore and faust's own)."""

from __future__ import annotations

from bench.b5_recovery import restore_seconds

BULK = (
    "[2026-11-21 14:43:01,300] [1] [INFO] bulk restore: 20000 of 20000 changelog offsets "
    "in 0.84s (23810/s)"
)
FAUST = [
    "[2026-11-21 14:43:01,263] [1] [INFO] [^---Recovery]: Restoring state from changelog topics...",
    "[2026-11-21 14:43:03,763] [1] [INFO] [^---Recovery]: Done reading from changelog topics",
]
COMPLETE = "[2026-11-21 14:43:03,800] [1] [INFO] [^---Recovery]: Recovery complete"
LATER = "[2026-11-21 14:44:00,000] [1] [INFO] bulk restore: 5 of 5 changelog offsets in 9.00s (1/s)"


def test_faust_only_recovery_is_timed_from_its_log_lines() -> None:
    assert restore_seconds([*FAUST, COMPLETE]) == 2.5


def test_bulk_restore_and_the_tail_faust_read_add_up() -> None:
    assert restore_seconds([BULK, COMPLETE, LATER]) == 0.84
    assert restore_seconds([BULK, *FAUST, COMPLETE]) == 0.84 + 2.5


def test_no_restore_logged_gives_none() -> None:
    assert restore_seconds(["[2026-11-21 14:43:01,263] [1] [INFO] something else"]) is None
