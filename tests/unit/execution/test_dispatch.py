"""KeyedDispatcher: accounts run concurrently, each in order; acks only ever a finished prefix."""

from __future__ import annotations

import asyncio

import pytest

from streams.execution.dispatch import KeyedDispatcher
from tables.durable import ChangelogAcks


class Gates:
    """Work that waits for the test to open its gate; records starts, finishes and releases."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.started: list[str] = []
        self.finished: list[str] = []
        self.released: list[str] = []

    def gate(self, item: str) -> asyncio.Event:
        return self.gates.setdefault(item, asyncio.Event())

    async def work(self, item: str, proceed: object = None) -> None:
        self.started.append(item)
        await self.gate(item).wait()
        if item.startswith("boom"):
            raise RuntimeError(item)
        self.finished.append(item)

    async def release(self, item: str) -> None:
        self.released.append(item)

    def dispatcher(self, max_pending: int = 100, max_per_key: int = 100) -> KeyedDispatcher[str]:
        return KeyedDispatcher(
            self.work, self.release, max_pending=max_pending, max_per_key=max_per_key
        )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_keys_run_concurrently_and_each_key_in_order() -> None:
    g = Gates()
    d = g.dispatcher()
    for key, item in [("A", "a1"), ("B", "b1"), ("A", "a2"), ("C", "c1")]:
        await d.submit(key, item)
    await settle()
    assert g.started == ["a1", "b1", "c1"]  # a2 waits for a1; b1, c1 do not
    g.gate("a2").set()
    await settle()
    assert "a2" not in g.started  # even when ready, it never overtakes a1
    g.gate("a1").set()
    await settle()
    assert g.finished == ["a1", "a2"]


async def test_release_is_a_finished_prefix_in_submission_order() -> None:
    g = Gates()
    d = g.dispatcher()
    for key, item in [("A", "a1"), ("B", "b1"), ("B", "b2"), ("C", "c1")]:
        await d.submit(key, item)
    for item in ("b1", "b2", "c1"):
        g.gate(item).set()
    await settle()
    assert sorted(g.finished) == ["b1", "b2", "c1"]
    assert g.released == []  # a1 (read first) is not taken yet: nothing may be committed
    assert d.pending == 4
    g.gate("a1").set()
    await d.drain()
    assert g.released == ["a1", "b1", "b2", "c1"]
    assert d.pending == 0


async def test_a_failure_is_never_released_and_holds_its_key() -> None:
    g = Gates()
    d = g.dispatcher()
    for key, item in [("A", "boom"), ("A", "a2"), ("B", "b1")]:
        await d.submit(key, item)
    g.gate("a2").set()
    g.gate("b1").set()
    g.gate("boom").set()
    await settle()
    assert g.started == ["boom", "b1"]  # a2 never runs after its key's failure
    assert g.released == []  # b1 finished, but after an unreleased item
    with pytest.raises(RuntimeError, match="boom"):
        await d.submit("C", "c1")  # the agent fails as the serial one did
    with pytest.raises(RuntimeError, match="boom"):
        await d.drain()


async def test_close_cancels_unfinished_work_without_releasing_it() -> None:
    g = Gates()
    d = g.dispatcher()
    await d.submit("A", "a1")
    await d.submit("B", "b1")
    g.gate("b1").set()
    await settle()
    d.close()
    await settle()
    assert g.finished == ["b1"]
    assert g.released == []


async def test_at_most_max_pending_unreleased_items() -> None:
    g = Gates()
    d = g.dispatcher(max_pending=2)
    await d.submit("A", "a1")
    await d.submit("B", "b1")
    third = asyncio.create_task(d.submit("C", "c1"))
    await settle()
    assert not third.done() and g.started == ["a1", "b1"]
    g.gate("b1").set()
    await settle()
    assert not third.done()  # b1 is finished but not released: a1 is still out
    g.gate("a1").set()
    await settle()
    assert third.done() and g.started == ["a1", "b1", "c1"]


async def test_one_key_backlog_is_bounded_so_a_rebalance_never_waits_for_it() -> None:
    g = Gates()
    d = g.dispatcher(max_per_key=2)
    await d.submit("A", "a1")
    await d.submit("A", "a2")
    third = asyncio.create_task(d.submit("A", "a3"))
    await settle()
    assert not third.done()  # the reader waits, as the serial agent did
    assert d.pending == 2
    g.gate("a1").set()
    await settle()
    assert third.done() and d.pending == 2  # a1 released, a3 taken in


async def test_changelog_waits_are_per_task_scope() -> None:
    """One decision's wait never takes (and returns without) another's pending writes."""
    acks = ChangelogAcks()
    loop = asyncio.get_running_loop()
    mine: asyncio.Future[None] = loop.create_future()
    theirs: asyncio.Future[None] = loop.create_future()
    other_written = asyncio.Event()

    async def other() -> None:
        acks.open_scope()
        acks.add(theirs)
        other_written.set()
        await acks.wait()

    async def me() -> None:
        acks.open_scope()
        await other_written.wait()
        acks.add(mine)
        await acks.wait()

    other_task = asyncio.create_task(other())
    my_task = asyncio.create_task(me())
    await settle()
    mine.set_result(None)
    await settle()
    assert my_task.done() and not other_task.done()  # I waited for mine only
    theirs.set_result(None)
    await settle()
    assert other_task.done()  # and theirs was still waited for by its own task


async def test_release_order_is_per_stream_so_a_slow_partition_holds_back_only_itself() -> None:
    g = Gates()
    d = g.dispatcher()
    await d.submit("B", "b1", stream=1)  # slow account, partition 1
    await d.submit("A", "a1", stream=0)
    await d.submit("C", "c1", stream=2)
    g.gate("a1").set()
    g.gate("c1").set()
    await settle()
    assert g.released == ["a1", "c1"]  # not held behind b1 (read first, other partition)
    assert d.pending == 1
    g.gate("b1").set()
    await d.drain()
    assert g.released == ["a1", "c1", "b1"]


async def test_a_full_key_overflows_instead_of_stopping_the_reader() -> None:
    g = Gates()
    deferred: list[str] = []

    async def overflow(item: str) -> None:
        deferred.append(item)

    d = KeyedDispatcher(g.work, g.release, max_pending=100, max_per_key=2, overflow=overflow)
    for item in ("b1", "b2", "b3", "b4"):
        await d.submit("B", item, stream=1)  # b1 hangs; b3 and b4 would make the reader wait
    await d.submit("A", "a1", stream=0)
    g.gate("a1").set()
    await settle()
    assert deferred == ["b3", "b4"] and d.overflowed == 2
    assert g.started == ["b1", "a1"]  # b2 waits behind b1 in its chain
    assert g.released == ["a1"]
    g.gate("b1").set()
    g.gate("b2").set()
    await d.drain()
    assert g.released == ["a1", "b1", "b2", "b3", "b4"]  # B's partition still in read order


async def test_admit_can_overflow_an_item_with_room_and_on_done_hears_of_free_slots() -> None:
    g = Gates()
    deferred: list[str] = []
    told: list[tuple[str, bool]] = []
    done: list[tuple[object, int]] = []

    async def overflow(item: str) -> None:
        deferred.append(item)

    def admit(key: object, item: str, full: bool) -> bool:
        told.append((item, full))
        return not item.endswith("!")  # e.g. an account with a backlog keeps its order

    d: KeyedDispatcher[str] = KeyedDispatcher(
        g.work,
        g.release,
        max_pending=100,
        max_per_key=2,
        overflow=overflow,
        admit=admit,
        on_done=lambda key: done.append((key, d.room(key))),
    )
    for item in ("b1", "b2!", "b3", "b4"):
        await d.submit("B", item)
    await settle()
    assert told == [("b1", False), ("b2!", False), ("b3", False), ("b4", True)]
    assert deferred == ["b2!", "b4"] and d.room("B") == 0  # b4: full, whatever admit said
    done.clear()
    g.gate("b1").set()
    await settle()
    assert done == [("B", 1)]  # told after the slot is free
    g.gate("b3").set()
    await d.drain()
    assert d.room("B") == 2 and g.released == ["b1", "b2!", "b3", "b4"]


async def test_proceed_lets_the_keys_next_item_start_but_release_stays_in_order() -> None:
    started: list[str] = []
    tails: dict[str, asyncio.Event] = {"a1": asyncio.Event(), "a2": asyncio.Event()}
    released: list[str] = []

    async def work(item: str, proceed: object) -> None:
        started.append(item)
        assert callable(proceed)
        proceed()  # e.g. the broker answered: the rest is bookkeeping
        await tails[item].wait()

    async def release(item: str) -> None:
        released.append(item)

    d = KeyedDispatcher(work, release, max_pending=100, max_per_key=2)
    await d.submit("A", "a1")
    await d.submit("A", "a2")
    await settle()
    assert started == ["a1", "a2"]  # a2 did not wait for a1's tail
    assert d.room("A") == 0  # a1 still counts against its key until it is finished
    tails["a2"].set()
    await settle()
    assert released == []  # a2 is finished, a1 is not: nothing may be acked
    tails["a1"].set()
    await d.drain()
    assert released == ["a1", "a2"]


async def test_an_item_that_fails_before_it_proceeds_holds_its_key() -> None:
    started: list[str] = []

    async def work(item: str, proceed: object) -> None:
        started.append(item)
        if item == "a1":
            raise RuntimeError("boom")

    async def release(item: str) -> None:
        raise AssertionError(f"{item} released")

    d = KeyedDispatcher(work, release, max_pending=100, max_per_key=2)
    await d.submit("A", "a1")
    await d.submit("A", "a2")
    await settle()
    assert started == ["a1"]  # a2 never overtakes the failed a1
    with pytest.raises(RuntimeError):
        await d.drain()
