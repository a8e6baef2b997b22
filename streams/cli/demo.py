"""`faust -A streams.app demo-feed`: synthetic TA signals for the local demo (`make run`).

Publishes one Avro signal per symbol per second (event time = now) to the signals topic and, when
a simulator URL is given, sets the simulator's last prices from the same signals so market orders
fill where the strategies saw the market.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import aiohttp
import faust
from aiokafka import AIOKafkaProducer

from schemas.codecs import encode_ta_signal_avro
from schemas.ta_signal import TaSignal
from streams.app import app, settings
from streams.demo import DEFAULT_PRICES, synthetic_signals
from streams.kafka_security import aiokafka_kwargs
from streams.ownership import bootstrap_servers


def batched(items: Iterable[TaSignal], n: int) -> Iterator[list[TaSignal]]:
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk


async def publish_prices(session: aiohttp.ClientSession, url: str, prices: dict[str, str]) -> None:
    try:
        async with session.post(f"{url}/admin/prices", json={"prices": prices}) as resp:
            resp.raise_for_status()
    except aiohttp.ClientError as exc:
        print(f"[demo-feed] simulator price update failed: {exc}", flush=True)


@app.command(
    faust.cli.option("--symbols", default="AAPL,MSFT,NVDA,TSLA,BTC/USD", help="Symbols to feed."),
    faust.cli.option("--interval", default=1.0, type=float, help="Seconds between rounds."),
    faust.cli.option("--rounds", default=0, type=int, help="Rounds to send (0 = until stopped)."),
    faust.cli.option("--simulator-url", default="", help="Alpaca simulator to feed prices to."),
    faust.cli.option("--seed", default=7, type=int, help="Seed of the synthetic series."),
)
async def demo_feed(
    self: Any, symbols: str, interval: float, rounds: int, simulator_url: str, seed: int
) -> None:
    """Feed synthetic TA signals (and simulator prices) for the local demo."""
    names = [s.strip() for s in symbols.split(",") if s.strip()]
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers),
        linger_ms=5,
        **aiokafka_kwargs(settings),
    )
    await producer.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
    sent = 0
    start = datetime.now(UTC)
    series = synthetic_signals(
        names, start, rounds or 10**9, seed=seed, step_ms=int(interval * 1000)
    )
    try:
        for i, batch in enumerate(batched(series, len(names))):
            # Pace rounds on the wall clock so event time stays close to "now".
            delay = (batch[0].event_ts - datetime.now(UTC)).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
            for sig in batch:
                await producer.send(
                    settings.signals_topic, encode_ta_signal_avro(sig), key=sig.symbol.encode()
                )
            if simulator_url:
                prices = {s.symbol: f"{s.sizing_price or DEFAULT_PRICES.get(s.symbol, 100):.2f}"
                          for s in batch}  # fmt: skip
                await publish_prices(session, simulator_url, prices)
            sent += len(batch)
            if (i + 1) % 30 == 0:
                print(f"[demo-feed] {sent} signals sent", flush=True)
    finally:
        await session.close()
        await producer.stop()
