"""B6 peer (b): the signals stage as a Quix Streams application (its own venv, bench/peers/venv.py).

    TORGHUT_…=… .cache/peers/quix-venv/bin/python -m bench.peers.quix_app \\
        --source T --sink T2 --group G --state-dir D

Settings come from the same environment as the worker's. The work per record is
`bench.peers.work.SignalWork` (the worker's code) in one stateful `apply`: the per-symbol
watermark lives in Quix's state store (RocksDB with a changelog topic, keyed by the record's key,
the symbol), the counterpart of the worker's changelog-backed watermark table. Quix's defaults
otherwise: at-least-once (a checkpoint flushes the producer, then commits state and offsets),
one consumer for the topic's partitions. Each decision goes out with key = account label.
Runs until SIGTERM (Quix stops on it).
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from quixstreams import Application
from quixstreams.models.serializers import Serializer

from bench.peers.work import DecisionRecord, SignalWork
from streams.ownership import bootstrap_servers
from streams.settings import Settings

POSITION = "position"


class StateStore:
    """The tracker's store over the Quix state of the record being processed (its symbol's)."""

    state: Any = None

    def get(self, key: str) -> str | None:
        value = self.state.get(POSITION)
        return None if value is None else str(value)

    def __setitem__(self, key: str, value: str) -> None:
        self.state.set(POSITION, value)


class RecordValue(Serializer):  # type: ignore[misc]
    """A decision record (key, encoded value) is sent as its encoded value."""

    def __call__(self, value: DecisionRecord, ctx: Any) -> bytes:
        return value[1]


def record_key(record: DecisionRecord) -> bytes:
    return record[0]


def build(source: str, sink: str, group: str, state_dir: str) -> Application:
    settings = Settings()
    store = StateStore()
    work = asyncio.run(SignalWork.build(settings, store))
    app = Application(
        broker_address=bootstrap_servers(settings.kafka_brokers),
        consumer_group=group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=state_dir,
    )
    signals = app.topic(source, key_deserializer="bytes", value_deserializer="bytes")
    decisions = app.topic(sink, key_serializer="bytes", value_serializer=RecordValue())

    def handle(
        value: bytes, key: Any, timestamp: int, headers: Any, state: Any
    ) -> list[DecisionRecord]:
        store.state = state
        outcome = work.handle(value, headers or ())
        if outcome.dead_letter:
            raise RuntimeError(f"dead letter in the bench backlog: {outcome}")
        # Quix commits the state with its checkpoint, after the producer was flushed.
        work.advance(outcome)
        return outcome.records

    sdf = app.dataframe(signals)
    sdf = sdf.apply(handle, stateful=True, metadata=True, expand=True)
    sdf.to_topic(decisions, key=record_key)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = build(args.source, args.sink, args.group, args.state_dir)
    app.run()


if __name__ == "__main__":
    main()
