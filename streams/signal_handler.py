"""The signals stage: each TA signal → dedupe watermark → strategy runtime → account decisions.

The `signals` agent hands its stream to `SignalHandler.run`. A signal's decisions (one per
receiving lane, key `account_label`) are sent together and acknowledged before the symbol's
watermark advances, so a crash in between redelivers the signal (duplicate decisions are harmless,
the lanes dedupe by hash) and never loses it.

Batches (`TORGHUT_SIGNAL_BATCH_MAX`, default on): the agent takes the signals queued for it at once
(`compat.event_batches`, without faust's per-event stream iteration), handles them in order,
awaits the acknowledgements of the batch's decisions together, advances each signal's watermark
once its own decisions are acknowledged, and only then acks the batch's offsets. The outcome of
each signal is the one it gets alone (`handle_batch`); a batch cancelled or failed mid-way (a
SIGTERM, Kafka unavailable) is never acked, and is read again after the restart.

Bounded input: a record that does not decode to a valid signal (bad bytes, an unaccepted schema
id, NaN or a negative price: `SignalDecoder`) or whose event time is more than
`max_event_time_skew_seconds` ahead of the worker's clock (`event_time_in_future`) is a dead
letter; it never reaches the strategies and never moves the symbol's watermark (one record dated
9999-12-31 would otherwise make every later signal of its symbol stale).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from schemas.codecs import DEFAULT_TA_SIGNAL_SCHEMA_IDS, DecodeError, encode_decision
from schemas.decision import AccountDecision
from schemas.ta_signal import TaSignal
from streams.compat import each_event_acked_when_done, event_batches, run_as_event
from streams.dlq import DELIVERY_TIMEOUT_SECONDS, DeadLetters
from streams.domain.replay import ReplayScope, replay_scope_from_headers
from streams.domain.signal_order import SignalOrder, WatermarkTracker
from streams.errors import is_poison, reason_code
from streams.flags.service import FlagService
from streams.signal_decoder import SignalDecoder
from streams.signal_pipeline import SignalPipeline

log = logging.getLogger(__name__)

DEFAULT_MAX_SKEW_SECONDS = 300.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


class SignalHandler:
    def __init__(
        self,
        pipeline: SignalPipeline,
        *,
        watermarks: WatermarkTracker,
        decisions: faust.TopicT,
        dead_letters: DeadLetters,
        flags: FlagService,
        decoder: SignalDecoder | None = None,
        max_event_time_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS,
        clock: Callable[[], datetime] = _utc_now,
        batch_max: int = 0,
        batch_acks: bool = True,
    ) -> None:
        self.pipeline = pipeline
        self._watermarks = watermarks
        self._decisions = decisions
        self._dead_letters = dead_letters
        self._flags = flags
        self._decoder = decoder or SignalDecoder(DEFAULT_TA_SIGNAL_SCHEMA_IDS)
        self._max_skew = timedelta(seconds=max_event_time_skew_seconds)
        self._clock = clock
        self._batch_max = batch_max
        self._batch_acks = batch_acks

    async def run(self, stream: faust.StreamT[bytes]) -> None:
        await self._flags.ensure_loaded()
        if self._batch_max:
            # Each batch acked only once all its signals were handled (never a cancelled one).
            async for events in event_batches(stream, self._batch_max, self._batch_acks):
                await self.handle_batch(events)
            return
        # Acked only once its decisions are acknowledged (never by a cancelled handling).
        await each_event_acked_when_done(stream, self.handle)

    async def handle(self, event: faust.EventT[bytes]) -> None:
        """One signal: its decisions sent and acknowledged, then its watermark advanced."""
        admitted = await self._admit(event)
        if admitted is None:
            return
        signal, replay = admitted
        if self._dropped(signal, replay):
            return
        decisions: list[AccountDecision] = []
        try:
            decisions = self.pipeline.process(signal, replay=replay)
        except Exception as exc:  # noqa: BLE001 - bad input must never stop the agent
            await self._dead_letters.event(event, "signal_processing_error", exc)
        else:
            if not await self.publish(event, decisions):
                return  # refused by Kafka for itself: dead-lettered, the watermark stays
        # Advanced only after the decisions are acknowledged: a crash before this line
        # redelivers the signal (duplicates are harmless, the lanes dedupe by hash).
        self._advance(event, signal, replay, produced_decisions=bool(decisions))

    async def handle_batch(self, events: Sequence[faust.EventT[bytes]]) -> None:
        """A batch of signals, in order, with the outcome of handling each alone (`handle`).

        The decisions of the batch are sent in order as their signals are processed and their
        acknowledgements awaited together at the end (`_settle`); a signal's watermark advances
        only once its decisions are acknowledged. A signal whose symbol has one waiting for its
        acknowledgements settles the batch so far first: it is classified against the advanced
        (or, when the decisions were refused, unchanged) watermark, exactly as alone. A bad
        record is dead-lettered alone; the caller acks the batch only once this returned."""
        sent: list[_Sent] = []
        waiting: set[str] = set()  # symbols with a signal in `sent`
        for event in events:
            admitted = await self._admit(event)
            if admitted is None:
                continue
            signal, replay = admitted
            if replay is None and signal.symbol in waiting:
                await self._settle(sent)
                waiting.clear()
            if self._dropped(signal, replay):
                continue
            try:
                decisions = self.pipeline.process(signal, replay=replay)
            except Exception as exc:  # noqa: BLE001 - bad input must never stop the agent
                await self._dead_letters.event(event, "signal_processing_error", exc)
                decisions = []
            if not decisions:
                self._advance(event, signal, replay, produced_decisions=False)
                continue
            sent.append(_Sent(event, signal, replay, decisions, await self._send(decisions)))
            if replay is None:
                waiting.add(signal.symbol)
        await self._settle(sent)

    async def _admit(
        self, event: faust.EventT[bytes]
    ) -> tuple[TaSignal, ReplayScope | None] | None:
        """The event's valid signal and replay scope, or None once it was dead-lettered."""
        try:
            signal = await self._decoder.decode(event.value)
            replay = replay_scope_from_headers(event.headers)
        except DecodeError as exc:
            await self._dead_letters.event(event, exc.reason, exc)
            return None
        except ValueError as exc:
            await self._dead_letters.event(event, "replay_headers_invalid", exc)
            return None
        ahead = signal.event_ts - self._clock()
        if ahead > self._max_skew:
            # Before the watermark and the strategies: a replay is history, and is bounded too.
            error = (
                f"TaSignal: event_ts is {ahead.total_seconds():.0f} s ahead of the worker clock "
                f"(max {self._max_skew.total_seconds():g} s)"
            )
            await self._dead_letters.event(event, "event_time_in_future", error)
            return None
        return signal, replay

    def _dropped(self, signal: TaSignal, replay: ReplayScope | None) -> bool:
        """Is the signal a duplicate or stale for its symbol's watermark (dropped, counted)?
        A replayed (historical) signal neither consults nor advances the live watermark."""
        if replay is not None:
            return False
        order = self._watermarks.classify(signal)
        if order is SignalOrder.new:
            return False
        self.pipeline.record_dropped(order)
        last = self._watermarks.last(signal.symbol)
        log.info(
            "signal dropped (%s): %s seq %s (watermark %s)",
            order.value,
            signal.symbol,
            signal.seq,
            f"seq {last[1]} at {last[0]} ms" if last else "none",
            extra={"symbol": signal.symbol, "seq": signal.seq, "drop_reason": order.value},
        )
        return True

    def _advance(
        self,
        event: faust.EventT[bytes],
        signal: TaSignal,
        replay: ReplayScope | None,
        produced_decisions: bool,
    ) -> None:
        if replay is None:
            run_as_event(event)  # a table write goes to the changelog partition of its event
            self._watermarks.advance(signal, produced_decisions=produced_decisions)

    async def _send(self, decisions: list[AccountDecision]) -> list[Any] | Exception:
        """Send the decisions (key = account label) without waiting: their delivery futures,
        or the error a send raised."""
        try:
            return [
                await self._decisions.send(key=d.account_label.encode(), value=encode_decision(d))
                for d in decisions
            ]
        except Exception as exc:  # noqa: BLE001 - handled in `_settle`, as `publish` would
            return exc

    async def _settle(self, sent: list[_Sent]) -> None:
        """Await the acknowledgements of every decision sent so far, together; then, signal by
        signal in order, advance the watermark of those acknowledged. As in `publish`, a signal
        with a decision Kafka refused for itself is dead-lettered and its watermark stays; one
        with another failure (or no acknowledgement in time) gets the guarded send of `publish`
        (retries; Kafka unavailable stops the worker before the batch is acked)."""
        if not sent:
            return
        futures = [f for item in sent if isinstance(item.acks, list) for f in item.acks]
        if futures:
            gathered = asyncio.gather(*futures, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gathered), DELIVERY_TIMEOUT_SECONDS)
        for item in sent:
            failure = _failure(item.acks)
            if failure is not None:
                if is_poison(failure):
                    reason = f"produce_failed:{reason_code(failure)}"
                    await self._dead_letters.event(item.event, reason, failure)
                    continue  # refused by Kafka for itself: dead-lettered, the watermark stays
                send_all = self._send_all(item.decisions)
                if not await self._dead_letters.produce(item.event, send_all, "decisions"):
                    continue
            SignalPipeline.record_emitted(item.decisions)
            self._advance(item.event, item.signal, item.replay, produced_decisions=True)
        sent.clear()

    def _send_all(self, decisions: list[AccountDecision]) -> Callable[[], Awaitable[Any]]:
        async def send_all() -> Any:
            pending: list[Any] = [
                await self._decisions.send(key=d.account_label.encode(), value=encode_decision(d))
                for d in decisions
            ]
            return asyncio.gather(*pending)

        return send_all

    async def publish(self, event: faust.EventT[bytes], decisions: list[AccountDecision]) -> bool:
        """Send the signal's decisions together (key = account label) and wait for all acks
        (guarded: a decision Kafka refuses dead-letters the signal, False; Kafka unavailable
        beyond the retries stops the worker before the signal is acked)."""
        if not decisions:
            return True
        if not await self._dead_letters.produce(event, self._send_all(decisions), "decisions"):
            return False
        SignalPipeline.record_emitted(decisions)
        return True


@dataclass
class _Sent:
    """A signal of a batch whose decisions were sent: `acks` their delivery futures, or the
    error a send raised."""

    event: faust.EventT[bytes]
    signal: TaSignal
    replay: ReplayScope | None
    decisions: list[AccountDecision]
    acks: list[Any] | Exception


def _failure(acks: list[Any] | Exception) -> BaseException | None:
    """Why the decisions are not all acknowledged (None: they are)."""
    if isinstance(acks, Exception):
        return acks
    for future in acks:
        if not isinstance(future, asyncio.Future):
            continue  # not a delivery future: nothing to wait for
        if not future.done():
            return TimeoutError(f"no acknowledgement within {DELIVERY_TIMEOUT_SECONDS:g} s")
        if future.cancelled():
            return asyncio.CancelledError("the delivery was cancelled")
        exc = future.exception()
        if exc is not None:
            return exc
    return None
