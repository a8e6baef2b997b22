"""Time source: the wall clock, or a manual clock that only moves when told to (replayable runs).

The equity session used for ``/v2/clock`` and for expiring ``day`` orders is Mon-Fri 09:30-16:00
America/New_York without holidays: enough for deterministic tests, not a market calendar.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SESSION_OPEN = time(9, 30)
SESSION_CLOSE = time(16, 0)
# A fixed, readable default start for manual clocks: Monday 2026-01-05 10:00 New York time.
DEFAULT_MANUAL_START = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)


class Clock(ABC):
    manual: bool = False

    @abstractmethod
    def now(self) -> datetime:
        """Current UTC time; never goes backwards."""

    @abstractmethod
    def reset(self) -> None:
        """Back to the start (manual) or nothing (real)."""

    def advance(self, seconds: float) -> datetime:
        raise RuntimeError("the real clock cannot be advanced; start with --manual-clock")

    def set(self, when: datetime) -> datetime:
        raise RuntimeError("the real clock cannot be set; start with --manual-clock")


class RealClock(Clock):
    def __init__(self) -> None:
        self._last = datetime.now(UTC)

    def now(self) -> datetime:
        # Clamp so order timestamps stay sorted even if the system clock steps back:
        # order listing relies on submission order == timestamp order.
        current = datetime.now(UTC)
        if current < self._last:
            return self._last
        self._last = current
        return current

    def reset(self) -> None:
        return None


class ManualClock(Clock):
    manual = True

    def __init__(self, start: datetime | None = None) -> None:
        self._start = (start or DEFAULT_MANUAL_START).astimezone(UTC)
        self._now = self._start

    def now(self) -> datetime:
        return self._now

    def reset(self) -> None:
        self._now = self._start

    def advance(self, seconds: float) -> datetime:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._now = self._now + timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> datetime:
        target = when.astimezone(UTC)
        if target < self._now:
            raise ValueError("the clock only moves forward")
        self._now = target
        return self._now


def _session_bounds(day: datetime) -> tuple[datetime, datetime]:
    local = day.astimezone(NEW_YORK)
    opens = datetime.combine(local.date(), SESSION_OPEN, tzinfo=NEW_YORK)
    closes = datetime.combine(local.date(), SESSION_CLOSE, tzinfo=NEW_YORK)
    return opens, closes


def next_session_close(after: datetime) -> datetime:
    """First weekday 16:00 New York strictly after ``after`` (UTC result)."""
    probe = after
    for _ in range(8):
        local = probe.astimezone(NEW_YORK)
        if local.weekday() < 5:
            _, closes = _session_bounds(probe)
            if closes > after:
                return closes.astimezone(UTC)
        probe = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=NEW_YORK)
    raise AssertionError("unreachable: a weekday occurs within 8 days")


def next_session_open(after: datetime) -> datetime:
    """First weekday 09:30 New York strictly after ``after`` (UTC result)."""
    probe = after
    for _ in range(8):
        local = probe.astimezone(NEW_YORK)
        if local.weekday() < 5:
            opens, _ = _session_bounds(probe)
            if opens > after:
                return opens.astimezone(UTC)
        probe = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=NEW_YORK)
    raise AssertionError("unreachable: a weekday occurs within 8 days")
