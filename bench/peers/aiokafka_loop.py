"""B6 peer (c): the signals stage as a plain aiokafka consume → produce loop.

    TORGHUT_…=… python -m bench.peers.aiokafka_loop --source T --sink T2 --group G

Settings (accounts, strategies, schema ids) come from the same environment as the worker's.
The work per record is `bench.peers.work.SignalWork` (the worker's code); the watermark store is
an in-memory dict (this loop has no changelog). At-least-once like B1: a batch's decisions are
acknowledged (acks=all) before its watermarks advance and its offsets are committed. Runs until
SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.peers.work import Outcome, SignalWork
from streams.ownership import bootstrap_servers
from streams.settings import Settings


async def run(source: str, sink: str, group: str) -> None:
    settings = Settings()
    store: dict[str, str] = {}
    work = await SignalWork.build(settings, store)
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers), acks="all"
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            pending: list[asyncio.Future[Any]] = []
            outcomes: list[Outcome] = []
            for records in batch.values():
                for r in records:
                    outcome = work.handle(r.value, r.headers)
                    if outcome.dead_letter:
                        raise RuntimeError(f"dead letter in the bench backlog: {outcome}")
                    for key, value in outcome.records:
                        pending.append(await producer.send(sink, value, key=key))
                    outcomes.append(outcome)
            await asyncio.gather(*pending)
            for outcome in outcomes:
                work.advance(outcome)
            if outcomes:
                await consumer.commit()
    finally:
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    args = parser.parse_args()
    asyncio.run(run(args.source, args.sink, args.group))


if __name__ == "__main__":
    main()
