"""The signals stage's work, framework-free, for the B6 peers (Quix Streams, plain aiokafka).

Exactly what the worker's `SignalHandler.handle` does for one record, on the same code: the
decoder's hot path (`decode_ta_signal` with the accepted schema ids, as `SignalDecoder.decode`
calls it for bare Avro), the replay headers, the event-time skew bound, the per-symbol
`WatermarkTracker` (over whatever store the peer has: Quix state, or a dict), the worker's own
`SignalPipeline` (strategy runtime, its metrics, fan-out to the receiving lanes) built from the
same settings and account registry, and `encode_decision`. The caller sends the records, waits
for their acks and then calls `advance` (the watermark moves only after the decisions are
acknowledged, as in the worker).

Bad input is counted with its dead-letter reason rather than produced to a dead-letter topic:
the benchmark's backlog holds none, and the peers must fail loudly if one appears
(`Outcome.dead_letter`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from schemas.codecs import DecodeError, decode_ta_signal, encode_decision
from schemas.ta_signal import TaSignal
from streams.context import load_accounts
from streams.domain.replay import replay_scope_from_headers
from streams.domain.signal_order import PositionStore, SignalOrder, WatermarkTracker
from streams.domain.strategy.catalog import build_runtime, load_catalog
from streams.flags.service import FlagService, build_flag_service, lane_labels
from streams.settings import Settings
from streams.signal_pipeline import SignalPipeline

DecisionRecord = tuple[bytes, bytes]  # (key = account label, value = encoded decision)


@dataclass
class Outcome:
    """One record's result: its signal (None when dead-lettered), decisions to send, and why a
    record was dead-lettered or dropped."""

    signal: TaSignal | None = None
    records: list[DecisionRecord] = field(default_factory=list)
    dead_letter: str | None = None
    dropped: SignalOrder | None = None
    replay: bool = False


class SignalWork:
    def __init__(self, settings: Settings, store: PositionStore, flags: FlagService) -> None:
        registry = load_accounts(settings)
        runtime = build_runtime(settings, load_catalog(settings))
        self.pipeline = SignalPipeline(
            runtime, registry.enabled(), lambda: flags.snapshot, settings.account_label
        )
        self.flags = flags
        self.watermarks = WatermarkTracker(
            store, max_future_ms=int(settings.max_event_time_skew_seconds * 1000)
        )
        self._accepted = settings.ta_signal_schema_id_set
        self._max_skew = timedelta(seconds=settings.max_event_time_skew_seconds)
        self.dead_letters = 0

    @classmethod
    async def build(cls, settings: Settings, store: PositionStore) -> SignalWork:
        """With the flags loaded once, as the signals agent does before its first record."""
        registry = load_accounts(settings)
        enabled = [a.label for a in registry.enabled()]
        flags = build_flag_service(settings, lane_labels(settings, enabled))
        await flags.ensure_loaded()
        return cls(settings, store, flags)

    def handle(self, raw: bytes | None, headers: Iterable[tuple[str, bytes]]) -> Outcome:
        try:
            signal = decode_ta_signal(raw, self._accepted)
            replay = replay_scope_from_headers(list(headers))
        except DecodeError as exc:
            return self._dead(exc.reason)
        except ValueError:
            return self._dead("replay_headers_invalid")
        if signal.event_ts - datetime.now(UTC) > self._max_skew:
            return self._dead("event_time_in_future")
        if replay is None:
            order = self.watermarks.classify(signal)
            if order is not SignalOrder.new:
                self.pipeline.record_dropped(order)
                return Outcome(signal, dropped=order)
        try:
            decisions = self.pipeline.process(signal, replay=replay)
        except Exception:  # noqa: BLE001 - as the worker: bad input never stops the stage
            return self._dead("signal_processing_error")
        if decisions:
            SignalPipeline.record_emitted(decisions)
        records = [(d.account_label.encode(), encode_decision(d)) for d in decisions]
        return Outcome(signal, records, replay=replay is not None)

    def advance(self, outcome: Outcome) -> None:
        """After the outcome's decisions were acknowledged."""
        if outcome.signal is not None and outcome.dropped is None and not outcome.replay:
            self.watermarks.advance(outcome.signal, produced_decisions=bool(outcome.records))

    def _dead(self, reason: str) -> Outcome:
        self.dead_letters += 1
        return Outcome(dead_letter=reason)
