"""The `lanes` agent: account decisions (and re-driven ones) → each account's execution lane.

concurrency=1 and no `isolated_partitions`: one actor per worker reads decisions in partition
order. `isolated_partitions` would run one actor per *topic* partition, and a decision on the
decisions topic and its re-drive on the retry topic would then race. Inside the actor, the
decisions of different accounts run concurrently and each account's strictly in order
(`KeyedDispatcher`, keyed by account label): one writer per account ledger, and a fan-out of one
intent to K accounts is not taken one account after another. The stream does not ack by itself
(`noack`): an event is acked once its decision and every decision read before it are taken, so
an offset never becomes committable ahead of an unfinished decision. Isolation between accounts
comes from the lane never waiting: each broker call is bounded by its timeout, nothing retries in
place (parked decisions are re-driven through the retry topic), and a lane in backoff makes no
broker call at all.
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from typing import Any, cast

import faust
from faust.streams import _current_event
from mode import BaseSignalT

from schemas.codecs import DecodeError, decode_decision, encode_decision
from schemas.decision import AccountDecision
from streams.app import app, settings
from streams.broker.pool import get_broker_pool
from streams.dlq import dead_letter_event
from streams.execution.dispatch import KeyedDispatcher
from streams.execution.runtime import (
    get_control_feed,
    get_lane_service,
    lane_service_if_built,
    owned_accounts,
)
from streams.execution.service import LaneService
from streams.execution.startup import check_kafka, load_accounts
from streams.topics import LANE_RETRIES_TOPIC
from tables.durable import changelog_acks
from tables.ledger import FaustLedger

log = logging.getLogger(__name__)

RETRY_TOPIC = LANE_RETRIES_TOPIC  # re-driven (parked) decisions, co-partitioned
CURSOR_MIRROR_EVERY = 5  # upkeep ticks
MAX_UNACKED = 256  # decisions read but not yet acked (a slow account holds back at most these)
# Unfinished decisions of one account before the reader waits (and with it every account). Small
# enough that a rebalance (which waits for unacked messages) is not held by a long backlog; large
# enough that two intents close together do not block the reader: bench B3 p99 @500/s was 2.7 s
# with 2, 0.47 s with 16 (head-of-line blocking).
MAX_PER_ACCOUNT = 16

lane_input = app.topic(
    settings.decisions_topic,
    RETRY_TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
    internal=True,  # declares the retry topic (an existing decisions topic is left as it is)
)
lane_retries = app.topic(
    RETRY_TOPIC,
    key_type=bytes,
    value_type=bytes,
    key_serializer="raw",
    value_serializer="raw",
    partitions=settings.topic_partitions,
)


@app.on_worker_init.connect
def refuse_bad_accounts(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """Before the worker starts: a bad registry (e.g. live without permission) exits non-zero.

    faust fires this for every CLI command; only the worker refuses to start here, so that
    `accounts --check` can print every problem itself."""
    if "worker" in sys.argv[1:]:
        load_accounts(settings)
        check_kafka(settings)


@app.agent(lane_input, name="lanes", concurrency=1)
async def lanes(stream: faust.StreamT[bytes]) -> None:
    """Account decisions (and re-driven ones) -> each account's execution lane and the broker."""
    await get_control_feed().caught_up.wait()  # never trade through a kill switch not yet read
    service = get_lane_service()
    # Acked by the dispatcher, in order, once taken (`noack` is not on StreamT).
    manual: faust.StreamT[bytes] = cast(Any, stream).noack()

    async def take(read: ReadDecision) -> None:
        await take_decision(read, service)

    dispatcher: KeyedDispatcher[ReadDecision] = KeyedDispatcher(
        take,
        lambda read: manual.ack(read.event),
        max_pending=MAX_UNACKED,
        max_per_key=MAX_PER_ACCOUNT,
    )
    try:
        async for event in manual.events():
            read = ReadDecision.of(event)
            await dispatcher.submit(read.account_label, read)
    finally:
        dispatcher.close()


class ReadDecision:
    """An event as read by the agent: its decision, or why it has none."""

    def __init__(self, event: faust.EventT[bytes]) -> None:
        self.event = event
        self.consumed_at = time.perf_counter()
        self.decision: AccountDecision | None = None
        self.error: DecodeError | None = None

    @classmethod
    def of(cls, event: faust.EventT[bytes]) -> ReadDecision:
        read = cls(event)
        try:
            read.decision = decode_decision(event.value)
        except DecodeError as exc:
            read.error = exc
        return read

    @property
    def account_label(self) -> str:
        """The dispatch key: undecodable events share one (empty) key."""
        return self.decision.account_label if self.decision is not None else ""


async def take_decision(read: ReadDecision, service: LaneService) -> None:
    """In the decision's own task: its table writes go to its event's changelog partition, and
    its durable writes are awaited apart from other accounts' (see tables/durable.py)."""
    event = read.event
    _current_event.set(weakref.ref(event))
    changelog_acks.open_scope()
    decision = read.decision
    if decision is None:
        assert read.error is not None
        await dead_letter_event(event, read.error.reason, read.error)
        return
    if service.lane(decision.account_label) is None:
        await dead_letter_event(event, "account_not_enabled", decision.account_label)
        return
    try:
        await service.handle(decision, read.consumed_at)
    except Exception as exc:  # the ledger itself failed; the entry is re-driven after restart
        log.exception("lane could not take a decision", extra={"account": decision.account_label})
        await dead_letter_event(event, "lane_failure", exc)


class _Upkeep:
    ticks = 0
    resume_pending = False


@app.on_rebalance_complete.connect
async def tables_recovered(
    sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any
) -> None:
    """After every recovery (start, rebalance) the ledger is scanned for unfinished entries."""
    _Upkeep.resume_pending = True


async def lanes_upkeep() -> None:
    """Re-drive parked decisions, resume after a rebalance, show controls, mirror cursors."""
    service = lane_service_if_built()
    if service is None:
        return
    if _Upkeep.resume_pending:
        _Upkeep.resume_pending = False
        service.resume(FaustLedger().scan())
    for decision in service.due_retries():
        await lane_retries.send(
            key=decision.account_label.encode(), value=encode_decision(decision)
        )
    service.watch_controls(owned_accounts(app, service))
    _Upkeep.ticks += 1
    if _Upkeep.ticks % CURSOR_MIRROR_EVERY == 0:
        await service.mirror_cursors()


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=1.0, name="lanes-upkeep")(lanes_upkeep)


@app.on_before_shutdown.connect
async def close_lanes(sender: Any, /, *args: Any, signal: BaseSignalT[Any], **kwargs: Any) -> None:
    service = lane_service_if_built()
    if service is not None:
        await service.close()
    get_broker_pool().close()
