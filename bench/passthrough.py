"""The raw-Kafka ceiling (B1): consume and produce each record unchanged, nothing else.

    python -m bench.passthrough --bootstrap H:P --source T --sink T2 --group G --count N

Same delivery shape as the worker: a consumer group, at-least-once (a batch's records are
acknowledged by the broker, acks=all, before its offsets are committed), the producer settings
faust uses by default (acks=all, no linger, 16 KiB batches, no compression). The record keeps
its partition. Prints one JSON line: records forwarded, CPU seconds from the first record on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer


async def passthrough(
    bootstrap: str, source: str, sink: str, group: str, count: int
) -> tuple[int, float]:
    """Records forwarded, and the CPU seconds spent from the first record on."""
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    forwarded = 0
    cpu_at_first: float | None = None
    try:
        while forwarded < count:
            batch = await consumer.getmany(timeout_ms=500)
            if batch and cpu_at_first is None:
                cpu_at_first = time.process_time()
            pending: list[asyncio.Future[Any]] = []
            for records in batch.values():
                for r in records:
                    fut = await producer.send(sink, r.value, key=r.key, partition=r.partition)
                    pending.append(fut)
            await asyncio.gather(*pending)
            if pending:
                await consumer.commit()
            forwarded += len(pending)
    finally:
        await producer.stop()
        await consumer.stop()
    return forwarded, time.process_time() - (cpu_at_first or 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    started = time.monotonic()
    forwarded, cpu = asyncio.run(
        passthrough(args.bootstrap, args.source, args.sink, args.group, args.count)
    )
    out = {
        "forwarded": forwarded,
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(time.monotonic() - started, 3),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
