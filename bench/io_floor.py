"""The raw I/O floor of one order (B0): the least I/O an order needs on this stack, written plainly.

    python -m bench.io_floor --bootstrap H:P --decisions T --ledger T2 --group G \\
        --sim URL     (accounts and their keys: TRADING_ACCOUNTS_JSON, as the worker's)

For each decision consumed from Kafka: one acknowledged Kafka write (key `account|hash`, as the
lane's durable `submitting`), the POST /v2/orders to the simulator over HTTP (aiohttp, one
keep-alive session), then one acknowledged write of the outcome. Plain aiokafka, no framework,
no state, no offset commits; each account's orders one after the other (one task per account, as
the project's lanes), all accounts at once. The outcome record's value is JSON with the order's
`event_ts` (the decision's, = its signal's event time) and `acked_at` (wall clock right after the
POST answered): the bench reads the latencies from it. Producer settings as faust's (acks=all,
no linger). Runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
from decimal import ROUND_DOWN, Decimal
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.codecs import decode_decision
from schemas.decision import AccountDecision


def order_body(decision: AccountDecision) -> dict[str, str]:
    """A market order for the decision's notional at its price (at least 1 share)."""
    price = decision.price or Decimal(1)
    qty = max(Decimal(1), (decision.notional / price).quantize(Decimal(1), rounding=ROUND_DOWN))
    return {
        "symbol": decision.symbol,
        "qty": str(qty),
        "side": decision.action.value,
        "type": "market",
        "time_in_force": "day",
        "client_order_id": decision.decision_hash,
    }


class Floor:
    def __init__(
        self, producer: AIOKafkaProducer, session: aiohttp.ClientSession, ledger: str, sim: str
    ) -> None:
        self.producer = producer
        self.session = session
        self.ledger = ledger
        self.url = sim.rstrip("/") + "/v2/orders"
        self.credentials: dict[str, dict[str, str]] = {}
        self.queues: dict[str, asyncio.Queue[bytes]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def account(self, label: str, key: str, secret: str) -> None:
        self.credentials[label] = {"APCA-API-KEY-ID": key, "APCA-API-SECRET-KEY": secret}
        self.queues[label] = asyncio.Queue()
        self.tasks.append(asyncio.create_task(self.lane(label)))

    async def lane(self, label: str) -> None:
        queue = self.queues[label]
        while True:
            await self.order(label, await queue.get())

    async def order(self, label: str, raw: bytes) -> None:
        decision = decode_decision(raw, verify_hash=False)
        key = f"{label}|{decision.decision_hash}".encode()
        started = time.time()
        await (await self.producer.send(self.ledger, raw, key=key))
        journaled = time.time()
        try:
            async with self.session.post(
                self.url, json=order_body(decision), headers=self.credentials[label]
            ) as response:
                status = response.status
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            status = 0  # counted by the bench as not acknowledged
        acked_at = time.time()
        outcome = {
            "account": label,
            "client_order_id": decision.decision_hash,
            "status": status,
            "event_ts": decision.event_ts.timestamp(),
            "received_at": started,
            "journaled_at": journaled,
            "acked_at": acked_at,
        }
        await (await self.producer.send(self.ledger, json.dumps(outcome).encode(), key=key))


async def run(
    bootstrap: str, decisions: str, ledger: str, group: str, sim: str, accounts: dict[str, Any]
) -> None:
    consumer = AIOKafkaConsumer(
        decisions,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await consumer.start()
    await producer.start()
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    floor = Floor(producer, session, ledger, sim)
    for account in accounts["accounts"]:
        floor.account(account["label"], account["api_key"], account["secret_key"])
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100)
            for records in batch.values():
                for r in records:
                    if r.value is not None and r.key is not None:
                        floor.queues[r.key.decode()].put_nowait(r.value)
    finally:
        for task in floor.tasks:
            task.cancel()
        await session.close()
        await producer.stop()
        await consumer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--decisions", required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--sim", required=True)
    args = parser.parse_args()
    accounts = json.loads(os.environ["TRADING_ACCOUNTS_JSON"])
    asyncio.run(run(args.bootstrap, args.decisions, args.ledger, args.group, args.sim, accounts))


if __name__ == "__main__":
    main()
