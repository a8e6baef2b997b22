"""CPU per broker call, alpaca-py's threaded client vs the aiohttp client, in one run.

`python -m bench.broker_client [--accounts 10] [--bursts 200] [--rounds 3]`

The simulator runs as a child process (its CPU is not counted). Each account gets an
`AlpacaBroker` of each client (the lanes' settings: shared call slots, the account's own slots);
a burst is one call per account at once (the shape of one intent fanned out to every account),
bursts one after another. Reported per call: this process's CPU (`time.process_time`, threads
included) and the burst's wall time (p50, p99). The clients take turns, `--rounds` times, so a
slower or busier stretch of the machine is shared by both. No stack needed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from pydantic import SecretStr

from schemas.decision import Action
from simulator.testing import SimulatorProcess
from streams.broker.alpaca import AlpacaBroker
from streams.domain.accounts import Account, AccountMode
from streams.domain.sizing import OrderPlan
from streams.settings import BrokerHttpClient

Call = Callable[[AlpacaBroker], Awaitable[Any]]


def _plan() -> OrderPlan:
    return OrderPlan(
        client_order_id=uuid.uuid4().hex,
        symbol="AAPL",
        side=Action.buy,
        qty=Decimal("1"),
        time_in_force="day",
        price=Decimal("100"),
    )


CALLS: dict[str, Call] = {
    "submit_order": lambda b: b.submit_order(_plan()),
    "order_by_client_id": lambda b: b.order_by_client_id("absent"),
    "account": lambda b: b.account(),
}


async def _bursts(
    brokers: list[AlpacaBroker], call: Call, bursts: int
) -> tuple[float, list[float]]:
    """(CPU seconds, wall seconds per burst) of `bursts` bursts of one call per account."""
    walls: list[float] = []
    cpu0 = time.process_time()
    for _ in range(bursts):
        started = time.perf_counter()
        await asyncio.gather(*(call(b) for b in brokers))
        walls.append(time.perf_counter() - started)
    return time.process_time() - cpu0, walls


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _run(url: str, accounts: list[tuple[str, str, str]], bursts: int, rounds: int) -> None:
    results: dict[tuple[str, str], list[tuple[float, list[float]]]] = {}
    for _ in range(rounds):
        for client in (BrokerHttpClient.alpaca_py, BrokerHttpClient.aiohttp):
            slots = asyncio.Semaphore(16)
            brokers = [
                AlpacaBroker(
                    Account(
                        label=label,
                        mode=AccountMode.paper,
                        api_key=SecretStr(key),
                        secret_key=SecretStr(secret),
                        base_url=url,
                    ),
                    timeout_seconds=5.0,
                    rate_limit_per_minute=10_000_000,
                    call_slots=slots,
                    http=client,
                )
                for label, key, secret in accounts
            ]
            try:
                await _bursts(brokers, CALLS["account"], 5)  # connections up, threads started
                for name, call in CALLS.items():
                    cpu, walls = await _bursts(brokers, call, bursts)
                    results.setdefault((client.value, name), []).append((cpu, walls))
            finally:
                for broker in brokers:
                    await broker.close()
    calls = bursts * len(accounts)
    print(
        f"{len(accounts)} accounts, {bursts} bursts x {rounds} rounds per call and client "
        f"({calls * rounds} calls each)"
    )
    print(
        f"{'call':<20}{'client':<11}{'CPU/call µs':>12}{'(min round)':>13}"
        f"{'burst p50 ms':>14}{'burst p99 ms':>14}"
    )
    per_call: dict[tuple[str, str], float] = {}
    for name in CALLS:
        for client in (BrokerHttpClient.alpaca_py, BrokerHttpClient.aiohttp):
            runs = results[(client.value, name)]
            cpus = [cpu / calls * 1e6 for cpu, _ in runs]
            walls = [w for _, ws in runs for w in ws]
            per_call[(client.value, name)] = statistics.median(cpus)
            print(
                f"{name:<20}{client.value:<11}{statistics.median(cpus):>12.0f}{min(cpus):>13.0f}"
                f"{_p(walls, 0.5) * 1e3:>14.2f}{_p(walls, 0.99) * 1e3:>14.2f}"
            )
        old = per_call[("alpaca-py", name)]
        new = per_call[("aiohttp", name)]
        print(f"{'':<20}{'ratio':<11}{new / old:>12.2f}  (aiohttp / alpaca-py, CPU per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--bursts", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    accounts = [(f"bench-{i}", f"AK-bench-{i}", f"SK-bench-{i}") for i in range(args.accounts)]
    config = {
        "accounts": [
            {
                "label": label,
                "key": key,
                "secret": secret,
                "cash": "1000000000",
                "rate_limit_per_minute": 10_000_000,
            }
            for label, key, secret in accounts
        ]
    }
    with SimulatorProcess(config, seed=1) as sim:
        sim.admin.set_prices({"AAPL": "100"})
        asyncio.run(_run(sim.url, accounts, args.bursts, args.rounds))


if __name__ == "__main__":
    main()
