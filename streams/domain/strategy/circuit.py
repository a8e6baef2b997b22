"""Per-strategy circuit breaker on event time: N consecutive errors degrade a strategy for a while.

Time is the signal's event time, not the wall clock, so a replay of the same signals opens and
closes the circuit at the same signals. When the cooldown has passed the strategy runs again with a
fresh error count; a success resets the count at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass
class CircuitState:
    consecutive_errors: int = 0
    total_errors: int = 0
    open_until: datetime | None = None
    last_error: str | None = None


class CircuitBreaker:
    def __init__(self, max_errors: int, cooldown: timedelta) -> None:
        self.max_errors = max_errors  # < 1 disables the breaker
        self.cooldown = cooldown
        self._states: dict[str, CircuitState] = {}
        self._open: set[str] = set()

    def state(self, key: str) -> CircuitState:
        return self._states.setdefault(key, CircuitState())

    @property
    def open_keys(self) -> frozenset[str]:
        """Keys whose circuit is open as last observed (cheap: kept up to date on each change)."""
        return frozenset(self._open)

    def is_open(self, key: str, at: datetime) -> bool:
        """Degraded at `at`? Closes (and forgets the error streak) once the cooldown is over."""
        if key not in self._open:  # the hot path: one set lookup
            return False
        state = self._states[key]
        if state.open_until is None or at >= state.open_until:
            state.open_until = None
            state.consecutive_errors = 0
            self._open.discard(key)
            return False
        return True

    def record_error(self, key: str, at: datetime, error: str) -> bool:
        """Count an error; True when this error opened the circuit."""
        state = self.state(key)
        state.consecutive_errors += 1
        state.total_errors += 1
        state.last_error = error
        if self.max_errors >= 1 and state.consecutive_errors >= self.max_errors:
            opened = state.open_until is None
            state.open_until = at + self.cooldown
            self._open.add(key)
            return opened
        return False

    def record_success(self, key: str) -> None:
        state = self._states.get(key)
        if state is not None:
            state.consecutive_errors = 0
