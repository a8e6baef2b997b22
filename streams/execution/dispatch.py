"""Per-account concurrency inside the single lanes actor, with in-order acknowledgement.

The lanes agent stays one actor (concurrency=1): it reads decisions in partition order and hands
each to `KeyedDispatcher.submit` with its account as the key. Items of one key run strictly one
after another, in arrival order (one writer per account ledger, as before); items of different
keys run concurrently, so a fan-out of one intent to K accounts no longer queues K decisions
behind each other.

Acknowledgement (the offset becoming committable) is what must not run ahead: an item is
released only once it *and every item submitted before it* are finished, so releases happen in
arrival order whatever order the work finishes in. faust commits the highest contiguous acked
offset, but its gap arithmetic is off by one for a single missing offset (faust-streaming #606),
so acking out of order is not safe; releasing a prefix is. An item whose work fails or is
cancelled is never released (nor is anything after it): it comes back after a restart, and the
lane's idempotent effects make the redelivery harmless.

Bounds, beyond which the reader waits (as the serial agent did): at most `max_per_key` items of
one key are submitted and unfinished (a short queue behind the running one), and at most
`max_pending` are unreleased in all. A rebalance waits for every unacknowledged message (faust's
`wait_empty`), so a backlog of one account must not pile up in its chain; and a slow account
holds back the release of at most `max_pending` items of the others (their work still goes on).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(eq=False)
class _Slot(Generic[T]):
    item: T
    finished: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class KeyedDispatcher(Generic[T]):
    def __init__(
        self,
        work: Callable[[T], Awaitable[None]],
        release: Callable[[T], Awaitable[object]],
        *,
        max_pending: int,
        max_per_key: int = 2,
    ) -> None:
        if max_pending < 1 or max_per_key < 1:
            raise ValueError("max_pending and max_per_key must be at least 1")
        self._work = work
        self._release = release
        self._max_pending = max_pending
        self._max_per_key = max_per_key
        self._unfinished: dict[Hashable, int] = {}  # per key: submitted, not finished
        self._pending: deque[_Slot[T]] = deque()  # submitted, not yet released, in order
        self._tails: dict[Hashable, _Slot[T]] = {}  # the last slot of each key
        self._room = asyncio.Event()
        self._releasing = False
        self._failure: BaseException | None = None

    @property
    def pending(self) -> int:
        """Items submitted and not yet released."""
        return len(self._pending)

    async def submit(self, key: Hashable, item: T) -> None:
        """Start `item` after the previous item of `key`; waits while `max_pending` are out.

        Raises the first failure of any earlier item (as the serial agent would have)."""
        self._raise_failure()
        while (
            len(self._pending) >= self._max_pending
            or self._unfinished.get(key, 0) >= self._max_per_key
        ):
            self._room.clear()
            await self._room.wait()
            self._raise_failure()
        self._unfinished[key] = self._unfinished.get(key, 0) + 1
        slot: _Slot[T] = _Slot(item)
        before = self._tails.get(key)
        self._tails[key] = slot
        self._pending.append(slot)
        slot.task = asyncio.create_task(self._run(key, slot, before))

    async def drain(self) -> None:
        """Wait until every item submitted so far is finished and released (or one failed)."""
        while self._pending and self._failure is None:
            self._room.clear()
            await self._room.wait()
        self._raise_failure()

    def close(self) -> None:
        """Cancel unfinished work (shutdown): nothing unfinished is ever released."""
        for slot in self._pending:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()

    async def _run(self, key: Hashable, slot: _Slot[T], before: _Slot[T] | None) -> None:
        try:
            if before is not None and before.task is not None:
                await asyncio.wait([before.task])
                if not before.finished:
                    return  # the key's previous item failed: this one must not overtake it
            await self._work(slot.item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("lane work failed; it and everything after it stay unacknowledged")
            if self._failure is None:
                self._failure = exc
            self._room.set()
            return
        slot.finished = True
        if self._tails.get(key) is slot:
            del self._tails[key]
        left = self._unfinished.pop(key) - 1
        if left:
            self._unfinished[key] = left
        self._room.set()
        await self._release_finished()

    async def _release_finished(self) -> None:
        """Release the finished prefix, in order; one releaser at a time."""
        if self._releasing:
            return  # the running releaser re-checks the head after every release
        self._releasing = True
        try:
            while self._pending and self._pending[0].finished:
                await self._release(self._pending.popleft().item)
        finally:
            self._releasing = False
            self._room.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
