"""The signals stage as the agent runs it, without Kafka: `SignalHandler.handle` over fake events.

Real decoder, real strategy runtime and `SignalPipeline`, a real `WatermarkTracker` over a dict,
a real `DeadLetters` writer; only the topics are recorders (what was sent, in order).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.codecs import decode_dead_letter, decode_decision
from schemas.dead_letter import DeadLetter
from schemas.decision import AccountDecision
from streams.dlq import DeadLetters
from streams.domain.signal_order import WatermarkTracker, epoch_millis
from streams.flags.core import GLOBAL_ENTITY, FlagSnapshot, lane_entity
from streams.flags.service import build_flag_service
from streams.flags.static import evaluate_static, settings_defaults
from streams.settings import RuntimeMode, Settings
from streams.signal_decoder import SignalDecoder
from streams.signal_handler import SignalHandler
from streams.signal_pipeline import SignalPipeline
from tests.unit.strategy.fixtures import config
from tests.unit.strategy.test_runtime import runtime

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
LANES = ("p-a", "p-b")
SIGNALS_TOPIC = "unit.signals"


@dataclass(frozen=True)
class Acct:
    label: str
    enabled: bool = True


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Event:
    value: bytes | None
    message: Message
    headers: dict[str, bytes] = field(default_factory=dict)


class RecordingTopic:
    """`send` records (key, value) and returns an acknowledged future, like faust's."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []

    async def send(self, *, key: bytes | None, value: bytes, **_: Any) -> asyncio.Future[None]:
        self.sent.append((key, value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


class Stage:
    """One signals stage with an always-buy strategy: every valid new signal gives decisions."""

    def __init__(
        self,
        *,
        now: datetime = NOW,
        max_skew_seconds: float = 300.0,
        decoder: SignalDecoder | None = None,
        store: dict[str, str] | None = None,
    ) -> None:
        self.now = now
        self.store: dict[str, str] = {} if store is None else store
        self.watermarks = WatermarkTracker(
            self.store,
            max_future_ms=int(max_skew_seconds * 1000),
            now_ms=lambda: epoch_millis(self.now),
        )
        self.decisions = RecordingTopic()
        self.dlq = RecordingTopic()
        settings = Settings(TRADING_MULTI_ACCOUNT_ENABLED=True)  # type: ignore[call-arg]
        accounts = [Acct(label) for label in LANES]
        entities = [GLOBAL_ENTITY, *(lane_entity(a.label) for a in accounts)]
        snapshot = FlagSnapshot(evaluate_static(entities, settings_defaults(settings), {}))
        rt = runtime([config("p-buy", "always_buy")], RuntimeMode.plugin_v3)
        pipeline = SignalPipeline(rt, accounts, lambda: snapshot, "p-a", clock=lambda: self.now)
        self.handler = SignalHandler(
            pipeline,
            watermarks=self.watermarks,
            decisions=self.decisions,  # type: ignore[arg-type]
            dead_letters=DeadLetters(self.dlq),
            flags=build_flag_service(settings, LANES),
            decoder=decoder,
            max_event_time_skew_seconds=max_skew_seconds,
            clock=lambda: self.now,
        )
        self._offset = 0

    async def feed(self, value: bytes | None, key: bytes | None = b"AAPL") -> None:
        self._offset += 1
        message = Message(SIGNALS_TOPIC, 0, self._offset, key, value)
        await self.handler.handle(Event(value, message))  # type: ignore[arg-type]

    def decisions_out(self) -> list[AccountDecision]:
        return [decode_decision(value) for _, value in self.decisions.sent]

    def dead_letters(self) -> list[DeadLetter]:
        return [decode_dead_letter(value) for _, value in self.dlq.sent]
