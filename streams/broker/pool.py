"""One `AlpacaBroker` per account per process, shared by the lane, the snapshot timer and the
reconciler so that they draw on one request budget (Alpaca limits per account)."""

from __future__ import annotations

import asyncio

from streams.broker.alpaca import AlpacaBroker
from streams.domain.accounts import Account
from streams.settings import Settings

# Broker calls running in threads at once, all accounts of the process together (see
# streams/broker/alpaca.py). Enough for every lane of a worker to have a call out at the same
# time on a small box, few enough that the event loop keeps the GIL when it needs it.
CALL_SLOTS = 16


class BrokerPool:
    def __init__(self, settings: Settings, call_slots: int = CALL_SLOTS) -> None:
        self._settings = settings
        self._brokers: dict[str, AlpacaBroker] = {}
        self._slots = asyncio.Semaphore(call_slots)

    def for_account(self, account: Account) -> AlpacaBroker:
        broker = self._brokers.get(account.label)
        if broker is None:
            broker = AlpacaBroker(
                account,
                timeout_seconds=self._settings.broker_timeout_seconds,
                rate_limit_per_minute=self._settings.broker_rate_limit_per_minute,
                call_slots=self._slots,
            )
            self._brokers[account.label] = broker
        return broker

    def close(self) -> None:
        for broker in self._brokers.values():
            broker.close()
        self._brokers.clear()
