"""Postgres calls on the order path: transient failures are retried, poison ones are raised.

A batch of trade updates is acknowledged only after it was applied, so while Postgres is down
the feed waits (lag grows and is visible) instead of skipping updates. A statement that fails
for its data (a constraint, a bad value) is poison: the caller dead-letters that record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streams.errors import is_infrastructure

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """The worker's one error policy (`streams.errors`): infrastructure, not the record."""
    return is_infrastructure(exc)


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    first_delay: float = 0.2,
    max_delay: float = 5.0,
    attempts: int | None = None,
    deadline: float | None = None,
) -> T:
    """`await call()`, retried with backoff while it fails transiently (forever by default).

    With `deadline` (loop time) nothing waits past it: each attempt is cut off at the deadline
    (`TimeoutError`, itself transient) and no retry starts that would sleep beyond it; the last
    failure is raised."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            if deadline is None:
                return await call()
            return await asyncio.wait_for(call(), timeout=max(0.0, deadline - loop.time()))
        except Exception as exc:
            out_of_time = deadline is not None and loop.time() + delay >= deadline
            if (
                not is_transient(exc)
                or (attempts is not None and attempt >= attempts)
                or out_of_time
            ):
                raise
            log.warning(
                "%s failed (%s), retrying in %.1fs",
                what,
                type(exc).__name__,
                delay,
                extra={"attempt": attempt},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
