"""Per-account request rate limit: a fixed window on the simulator clock (Alpaca: 200/min)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .clock import Clock


@dataclass(slots=True, frozen=True)
class RateDecision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # unix seconds when the window ends

    def headers(self) -> dict[str, str]:
        return {
            "X-Ratelimit-Limit": str(self.limit),
            "X-Ratelimit-Remaining": str(self.remaining),
            "X-Ratelimit-Reset": str(self.reset),
        }


class RateLimiter:
    def __init__(self, clock: Clock, window_s: float) -> None:
        self._clock = clock
        self._window_s = window_s
        self._windows: dict[str, tuple[int, int]] = {}  # label -> (window index, count)

    def reset(self) -> None:
        self._windows.clear()

    def hit(self, label: str, limit: int) -> RateDecision:
        """Count one request; refused requests do not count."""
        now = self._clock.now().timestamp()
        window = int(now // self._window_s)
        reset = math.ceil((window + 1) * self._window_s)
        index, count = self._windows.get(label, (window, 0))
        if index != window:
            count = 0
        if count >= limit:
            self._windows[label] = (window, count)
            return RateDecision(False, limit, 0, reset)
        count += 1
        self._windows[label] = (window, count)
        return RateDecision(True, limit, limit - count, reset)

    def exhausted(self, label: str, limit: int) -> RateDecision:
        """Headers for a forced 429: the window reads as used up."""
        now = self._clock.now().timestamp()
        window = int(now // self._window_s)
        return RateDecision(False, limit, 0, math.ceil((window + 1) * self._window_s))
