"""A second ceiling: faust's own per-record cost, an agent that forwards each record unchanged.

    BENCH_APP_ID=… BENCH_BROKER=host:port BENCH_SOURCE=… BENCH_SINK=… BENCH_DATADIR=… \\
        python -m faust -A bench.faust_passthrough worker -l warning

Same delivery shape as the signals agent (one actor, raw bytes, at-least-once, acks=all, the
record keeps its partition) with no decode, strategy or fan-out: B2 against this shows how much
of the gap to B1 is our work and how much is faust's consumer and stream path.
"""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ["BENCH_APP_ID"],
    broker=f"kafka://{os.environ['BENCH_BROKER']}",
    datadir=os.environ["BENCH_DATADIR"],
    web_enabled=False,
    autodiscover=False,
    key_serializer="raw",
    value_serializer="raw",
    consumer_auto_offset_reset="earliest",
    processing_guarantee="at_least_once",
    producer_acks=-1,
    topic_replication_factor=1,
)
source = app.topic(os.environ["BENCH_SOURCE"], key_type=bytes, value_type=bytes)
sink = app.topic(os.environ["BENCH_SINK"], key_type=bytes, value_type=bytes)


@app.agent(source, concurrency=1)
async def forward(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value, partition=event.message.partition)
