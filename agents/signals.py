"""The `signals` agent: TA signals in, one account decision per receiving lane out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from schemas.codecs import DecodeError, decode_ta_signal, encode_decision
from schemas.decision import AccountDecision
from streams.app import app
from streams.dlq import dead_letter_event
from streams.domain.accounts import AccountConfigError
from streams.domain.replay import replay_scope_from_headers
from streams.domain.signal_order import SignalOrder
from streams.domain.strategy.registry import StrategyConfigError
from streams.flags.service import get_flag_service
from streams.signal_pipeline import SignalPipeline, get_signal_pipeline
from streams.topics import decisions_topic, signals_topic
from tables.signal_watermarks import watermarks

log = logging.getLogger(__name__)


@app.agent(signals_topic, name="signals", concurrency=1)
async def signals(stream: faust.StreamT[bytes]) -> None:
    """TA signals -> strategy runtime -> one decision per enabled account (key account_label)."""
    try:
        pipeline = get_signal_pipeline()  # resolves and verifies the strategy catalogue
    except (StrategyConfigError, AccountConfigError) as exc:
        # A restarted agent would fail the same way forever: stop the worker, loudly.
        log.critical("invalid configuration: %s", exc)
        await app.crash(exc)
        return
    await get_flag_service().ensure_loaded()
    async for event in stream.events():
        await handle_signal(event, pipeline)


async def handle_signal(event: faust.EventT[bytes], pipeline: SignalPipeline) -> None:
    try:
        signal = decode_ta_signal(event.value)
        replay = replay_scope_from_headers(event.headers)
    except DecodeError as exc:
        await dead_letter_event(event, exc.reason, exc)
        return
    except ValueError as exc:
        await dead_letter_event(event, "replay_headers_invalid", exc)
        return
    # A replayed (historical) signal neither consults nor advances the live watermark.
    order = SignalOrder.new
    if replay is None:
        order = watermarks.classify(signal)
    if order is not SignalOrder.new:
        pipeline.record_dropped(order)
        log.info(
            "signal dropped (%s): %s seq %s",
            order.value,
            signal.symbol,
            signal.seq,
            extra={"symbol": signal.symbol, "seq": signal.seq, "drop_reason": order.value},
        )
        return
    decisions: list[AccountDecision] = []
    try:
        decisions = pipeline.process(signal, replay=replay)
    except Exception as exc:  # noqa: BLE001 - bad input must never stop the agent
        await dead_letter_event(event, "signal_processing_error", exc)
    else:
        await publish(decisions)
    # Advanced only after the decisions are acknowledged: a crash before this line redelivers
    # the signal (duplicate decisions are harmless, the lanes dedupe by hash); lost ones are not.
    if replay is None:
        watermarks.advance(signal, produced_decisions=bool(decisions))


async def publish(decisions: list[AccountDecision]) -> None:
    """Send the signal's decisions together (key = account label) and wait for all acks."""
    if not decisions:
        return
    pending: list[Any] = [
        await decisions_topic.send(key=d.account_label.encode(), value=encode_decision(d))
        for d in decisions
    ]
    await asyncio.gather(*pending)
    SignalPipeline.record_emitted(decisions)
