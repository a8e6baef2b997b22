"""Publishing converted signals onto the signals topic: JSON, keyed by symbol, acknowledged."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from schemas.codecs import encode_ta_signal_json
from schemas.ta_signal import TaSignal


def signal_record(sig: TaSignal) -> tuple[bytes, bytes]:
    """(key, value) of a signal on the signals topic: the symbol, and the JSON TaSignal."""
    return sig.symbol.encode(), encode_ta_signal_json(sig)


class TopicPublisher:
    """Publishes onto a faust topic (raw bytes) and waits for every acknowledgement."""

    def __init__(self, topic: Any) -> None:
        self.topic = topic

    async def publish(
        self, signals: Sequence[TaSignal], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        pending = []
        for sig in signals:
            key, value = signal_record(sig)
            # force: publish now, not attached to the commit of a stream event (there is none).
            pending.append(await self.topic.send(key=key, value=value, headers=headers, force=True))
        await asyncio.gather(*pending)
