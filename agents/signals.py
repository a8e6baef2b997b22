"""The `signals` agent: TA signals in, one account decision per receiving lane out."""

from __future__ import annotations

import faust

from streams.app import app, topics
from streams.signal_handler import SignalHandler


@app.agent(topics.signals, name="signals", concurrency=1)
async def signals(stream: faust.StreamT[bytes]) -> None:
    """TA signals -> strategy runtime -> one decision per enabled account (key account_label)."""
    context = app.context
    handler = SignalHandler(
        context.signal_pipeline,
        watermarks=context.tables.watermarks,
        decisions=topics.decisions,
        dead_letters=context.dead_letters,
        flags=context.flags,
        decoder=context.signal_decoder,
        max_event_time_skew_seconds=context.settings.max_event_time_skew_seconds,
        batch_max=context.settings.signal_batch_max,
        batch_acks=context.settings.lean_drain,
    )
    await handler.run(stream)
