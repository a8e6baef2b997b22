"""Per-account token bucket that keeps a lane under Alpaca's 200 requests per rolling minute.

Alpaca counts requests per rolling minute. A bucket refilling `per_minute / 60` tokens a second
with a small burst `b` admits at most `b + per_minute` requests in any 60 s window, so the burst is
kept to 5% of the budget: with the default 190/min that is 9 + 190 = 199 < 200.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(
        self,
        per_minute: int,
        burst: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_minute <= 0:
            raise ValueError("per_minute must be > 0")
        self.rate = per_minute / 60.0
        self.capacity = float(burst if burst is not None else max(1, per_minute // 20))
        self._tokens = self.capacity
        self._clock = clock
        self._stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def try_acquire(self) -> float:
        """Take a token and return 0.0, or take nothing and return the seconds until one exists."""
        self._refill()
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    @property
    def available(self) -> float:
        self._refill()
        return self._tokens
