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

An item may let the next item of its key start before it is finished: `work` gets a
`proceed` callback, and the lanes call it once the broker has answered, so an account's next
order does not wait for the previous one's bookkeeping (its Postgres rows). The item still
counts against its key's bound and is released (acked) only once it is finished, in order.

Release order is kept per *stream* (the caller passes the item's topic partition): faust
commits each partition on its own, so a slow account holds back the acks of its own partition
only, never those of accounts on other partitions.

Bounds: at most `max_per_key` items of one key are submitted and unfinished (a short queue
behind the running one). A key that is full does not make the reader wait when an `overflow`
is given: the item runs `overflow` instead, at once and outside the key's chain (the lanes park
the decision durably and re-drive it later), so one slow account never stops the reader, and
with it every other account. An `admit` hook may send an item to `overflow` although its key
has room (the lanes keep a deferred account's decisions in order), and `on_done` hears of every
finished item by its key (the lanes re-drive deferred decisions as slots free up). At most
`max_pending` are unreleased in all (beyond that the reader waits). A rebalance waits for
every unacknowledged message (faust's `wait_empty`), which the per-key bound keeps short.
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
    failed: bool = False
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    # Set when the key's next item may start: the work called `proceed`, or the item ended.
    go: asyncio.Event = field(default_factory=asyncio.Event, repr=False)


class KeyedDispatcher(Generic[T]):
    def __init__(
        self,
        work: Callable[[T, Callable[[], None]], Awaitable[None]],
        release: Callable[[T], Awaitable[object]],
        *,
        max_pending: int,
        max_per_key: int = 2,
        overflow: Callable[[T], Awaitable[None]] | None = None,
        admit: Callable[[Hashable, T, bool], bool] | None = None,
        on_done: Callable[[Hashable], None] | None = None,
    ) -> None:
        if max_pending < 1 or max_per_key < 1:
            raise ValueError("max_pending and max_per_key must be at least 1")
        self._work = work
        self._release = release
        self._max_pending = max_pending
        self._max_per_key = max_per_key
        self._overflow = overflow
        # (key, item, key full) → whether the item takes a place in its key's chain (else it
        # runs `overflow`); without it: whether the key has room.
        self._admit = admit
        self._on_done = on_done
        self._unfinished: dict[Hashable, int] = {}  # per key: submitted, not finished
        # per stream: submitted, not yet released, in submission order
        self._pending: dict[Hashable, deque[_Slot[T]]] = {}
        self._count = 0  # unreleased items, all streams
        self._tails: dict[Hashable, _Slot[T]] = {}  # the last slot of each key
        self._room = asyncio.Event()
        self._releasing: set[Hashable] = set()
        self._failure: BaseException | None = None
        self.overflowed = 0  # items that ran `overflow` (a full key)

    @property
    def pending(self) -> int:
        """Items submitted and not yet released."""
        return self._count

    def key_full(self, key: Hashable) -> bool:
        return self._unfinished.get(key, 0) >= self._max_per_key

    def room(self, key: Hashable) -> int:
        """Items of `key` that can be submitted now without overflowing."""
        return max(0, self._max_per_key - self._unfinished.get(key, 0))

    async def submit(self, key: Hashable, item: T, stream: Hashable = None) -> None:
        """Start `item` after the previous item of `key` (or, the key being full, its
        `overflow` at once); waits while `max_pending` are out. `stream` is the release order
        the item belongs to (its topic partition).

        Raises the first failure of any earlier item (as the serial agent would have)."""
        self._raise_failure()
        while self._count >= self._max_pending or (self._overflow is None and self.key_full(key)):
            self._room.clear()
            await self._room.wait()
            self._raise_failure()
        full = self.key_full(key)
        admitted = True
        if self._overflow is not None and self._admit is not None:
            admitted = self._admit(key, item, full)  # told in every case (it keeps count)
        overflow = self._overflow is not None and (full or not admitted)
        slot: _Slot[T] = _Slot(item)
        self._pending.setdefault(stream, deque()).append(slot)
        self._count += 1
        if overflow and self._overflow is not None:
            self.overflowed += 1
            slot.task = asyncio.create_task(self._run_overflow(key, stream, slot, self._overflow))
            return
        self._unfinished[key] = self._unfinished.get(key, 0) + 1
        before = self._tails.get(key)
        self._tails[key] = slot
        slot.task = asyncio.create_task(self._run(key, stream, slot, before))

    async def drain(self) -> None:
        """Wait until every item submitted so far is finished and released (or one failed)."""
        while self._count and self._failure is None:
            self._room.clear()
            await self._room.wait()
        self._raise_failure()

    def close(self) -> None:
        """Cancel unfinished work (shutdown): nothing unfinished is ever released."""
        for slots in self._pending.values():
            for slot in slots:
                if slot.task is not None and not slot.task.done():
                    slot.task.cancel()

    async def _run(
        self, key: Hashable, stream: Hashable, slot: _Slot[T], before: _Slot[T] | None
    ) -> None:
        try:
            if before is not None:
                await before.go.wait()
                if before.failed or (before.task is not None and before.task.cancelled()):
                    slot.failed = True
                    return  # the key's previous item failed: this one must not overtake it
            await self._work(slot.item, slot.go.set)
        except asyncio.CancelledError:
            slot.failed = True
            raise
        except Exception as exc:  # noqa: BLE001 - held, and raised to the reader (submit)
            slot.failed = True
            self._failed(exc)
            return
        finally:
            slot.go.set()  # never leave the key's next item waiting (it checks `failed`)
        slot.finished = True
        if self._tails.get(key) is slot:
            del self._tails[key]
        left = self._unfinished.pop(key) - 1
        if left:
            self._unfinished[key] = left
        self._room.set()
        self._done(key)
        await self._release_finished(stream)

    async def _run_overflow(
        self,
        key: Hashable,
        stream: Hashable,
        slot: _Slot[T],
        overflow: Callable[[T], Awaitable[None]],
    ) -> None:
        try:
            await overflow(slot.item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - held, and raised to the reader (submit)
            self._failed(exc)
            return
        slot.finished = True
        self._room.set()
        self._done(key)
        await self._release_finished(stream)

    def _done(self, key: Hashable) -> None:
        if self._on_done is not None:
            try:
                self._on_done(key)
            except Exception:  # a notification; the item itself is finished
                log.exception("on_done hook failed")

    def _failed(self, exc: BaseException) -> None:
        log.exception("lane work failed; it and everything after it stay unacknowledged")
        if self._failure is None:
            self._failure = exc
        self._room.set()

    async def _release_finished(self, stream: Hashable) -> None:
        """Release the stream's finished prefix, in order; one releaser per stream."""
        if stream in self._releasing:
            return  # the running releaser re-checks the head after every release
        self._releasing.add(stream)
        slots = self._pending[stream]
        try:
            while slots and slots[0].finished:
                item = slots.popleft().item
                self._count -= 1
                await self._release(item)
        finally:
            self._releasing.discard(stream)
            if not slots and self._pending.get(stream) is slots:
                del self._pending[stream]
            self._room.set()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
