"""The signals stage: each TA signal → dedupe watermark → strategy runtime → account decisions.

The `signals` agent hands its stream to `SignalHandler.run`. A signal's decisions (one per
receiving lane, key `account_label`) are sent together and acknowledged before the symbol's
watermark advances, so a crash in between redelivers the signal (duplicate decisions are harmless,
the lanes dedupe by hash) and never loses it.

Bounded input: a record that does not decode to a valid signal (bad bytes, an unaccepted schema
id, NaN or a negative price: `SignalDecoder`) or whose event time is more than
`max_event_time_skew_seconds` ahead of the worker's clock (`event_time_in_future`) is a dead
letter; it never reaches the strategies and never moves the symbol's watermark (one record dated
9999-12-31 would otherwise make every later signal of its symbol stale).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import faust

from schemas.codecs import DEFAULT_TA_SIGNAL_SCHEMA_IDS, DecodeError, encode_decision
from schemas.decision import AccountDecision
from streams.compat import each_event_acked_when_done
from streams.dlq import DeadLetters
from streams.domain.replay import replay_scope_from_headers
from streams.domain.signal_order import SignalOrder, WatermarkTracker
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
    ) -> None:
        self.pipeline = pipeline
        self._watermarks = watermarks
        self._decisions = decisions
        self._dead_letters = dead_letters
        self._flags = flags
        self._decoder = decoder or SignalDecoder(DEFAULT_TA_SIGNAL_SCHEMA_IDS)
        self._max_skew = timedelta(seconds=max_event_time_skew_seconds)
        self._clock = clock

    async def run(self, stream: faust.StreamT[bytes]) -> None:
        await self._flags.ensure_loaded()
        # Acked only once its decisions are acknowledged (never by a cancelled handling).
        await each_event_acked_when_done(stream, self.handle)

    async def handle(self, event: faust.EventT[bytes]) -> None:
        try:
            signal = await self._decoder.decode(event.value)
            replay = replay_scope_from_headers(event.headers)
        except DecodeError as exc:
            await self._dead_letters.event(event, exc.reason, exc)
            return
        except ValueError as exc:
            await self._dead_letters.event(event, "replay_headers_invalid", exc)
            return
        ahead = signal.event_ts - self._clock()
        if ahead > self._max_skew:
            # Before the watermark and the strategies: a replay is history, and is bounded too.
            error = (
                f"TaSignal: event_ts is {ahead.total_seconds():.0f} s ahead of the worker clock "
                f"(max {self._max_skew.total_seconds():g} s)"
            )
            await self._dead_letters.event(event, "event_time_in_future", error)
            return
        # A replayed (historical) signal neither consults nor advances the live watermark.
        order = SignalOrder.new
        if replay is None:
            order = self._watermarks.classify(signal)
        if order is not SignalOrder.new:
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
        if replay is None:
            self._watermarks.advance(signal, produced_decisions=bool(decisions))

    async def publish(self, event: faust.EventT[bytes], decisions: list[AccountDecision]) -> bool:
        """Send the signal's decisions together (key = account label) and wait for all acks
        (guarded: a decision Kafka refuses dead-letters the signal, False; Kafka unavailable
        beyond the retries stops the worker before the signal is acked)."""
        if not decisions:
            return True

        async def send_all() -> Any:
            pending: list[Any] = [
                await self._decisions.send(key=d.account_label.encode(), value=encode_decision(d))
                for d in decisions
            ]
            return asyncio.gather(*pending)

        if not await self._dead_letters.produce(event, send_all, "decisions"):
            return False
        SignalPipeline.record_emitted(decisions)
        return True
