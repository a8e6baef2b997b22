"""`compat.EagerNoSkipConsumer`: the fetch loop's per-record `wait_first` made inline when the
delivery does not wait, and faust's race against a rebalance when it does. The faust and mode
internals it relies on are pinned here (an upgrade that changes them fails here)."""

from __future__ import annotations

import asyncio
import inspect
import re
from typing import Any

import faust
from faust.transport import consumer as faust_consumer
from mode.services import Service

from streams import compat
from tests.unit.compat.test_no_skip_consumer import _consumer


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def test_faust_fetch_loop_races_each_delivery_with_the_flow_suspension_and_nothing_else() -> None:
    drain = _squash(inspect.getsource(faust_consumer.Consumer._drain_messages))
    assert "awaitself.wait_first(callback(message),self.suspend_flow.wait())" in drain
    module = inspect.getsource(faust_consumer)
    assert len(re.findall(r"\.wait_first\(", module)) == 1  # the fetch loop's call only
    consumer = _consumer(compat.EagerNoSkipConsumer)
    assert type(consumer.suspend_flow) is asyncio.Event
    assert type(consumer._stopped) is asyncio.Event or hasattr(consumer._stopped, "is_set")
    # mode's wait_first wraps every argument and the stopped/crashed waits in tasks
    assert "ensure_future" in inspect.getsource(Service.wait_first)


async def test_a_delivery_that_never_waits_runs_inline_without_a_task() -> None:
    consumer = _consumer(compat.EagerNoSkipConsumer)
    outer = asyncio.current_task()
    ran_in: list[Any] = []

    async def deliver() -> str:
        ran_in.append(asyncio.current_task())
        return "delivered"

    result = await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert ran_in == [outer]
    assert result.results == ["delivered"] and not result.stopped
    assert (consumer.fast, consumer.raced) == (1, 0)


async def test_a_delivery_that_waits_is_finished_from_where_it_stopped() -> None:
    consumer = _consumer(compat.EagerNoSkipConsumer)
    room = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def deliver() -> None:
        steps.append("decoded")
        steps.append(await room)  # a full stream buffer
        steps.append("queued")

    asyncio.get_running_loop().call_later(0.01, room.set_result, "room")
    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert steps == ["decoded", "room", "queued"]  # the first step ran once, not twice
    assert (consumer.fast, consumer.raced) == (0, 1)


async def test_a_waiting_delivery_is_abandoned_when_a_rebalance_suspends_the_flow() -> None:
    consumer = _consumer(compat.EagerNoSkipConsumer)
    outcome: list[str] = []

    async def deliver() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # never room
            outcome.append("delivered")
        except asyncio.CancelledError:
            outcome.append("cancelled")
            raise

    asyncio.get_running_loop().call_later(0.01, consumer.suspend_flow.set)
    result = await asyncio.wait_for(consumer.wait_first(deliver(), consumer.suspend_flow.wait()), 5)
    await asyncio.sleep(0)
    assert outcome == ["cancelled"]
    assert len(result.done) == 1 and result.done[0] is not None


async def test_an_error_in_the_inline_step_propagates_as_from_faust() -> None:
    consumer = _consumer(compat.EagerNoSkipConsumer)

    async def deliver() -> None:
        raise ValueError("bad record")

    try:
        await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    except ValueError as exc:
        assert str(exc) == "bad record"
    else:
        raise AssertionError("the delivery's error was swallowed")


async def test_with_the_flow_suspended_it_is_fausts_own_race() -> None:
    consumer = _consumer(compat.EagerNoSkipConsumer)
    consumer.suspend_flow.set()
    outer = asyncio.current_task()
    ran_in: list[Any] = []

    async def deliver() -> None:
        ran_in.append(asyncio.current_task())

    await consumer.wait_first(deliver(), consumer.suspend_flow.wait())
    assert ran_in in ([], [ran_in[0]]) and outer not in ran_in
    assert (consumer.fast, consumer.raced) == (0, 0)


def test_the_setting_picks_the_consumer() -> None:
    app = faust.App("eager-test", broker="kafka://127.0.0.1:9")
    eager = compat.no_skip_transport(app, eager_delivery=True)
    plain = compat.no_skip_transport(app, eager_delivery=False)
    assert eager.Consumer is compat.EagerNoSkipConsumer
    assert plain.Consumer is compat.NoSkipConsumer
    assert issubclass(compat.EagerNoSkipConsumer, compat.NoSkipConsumer)
