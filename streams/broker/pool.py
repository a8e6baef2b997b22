"""One `AlpacaBroker` per account per process, shared by the lane, the snapshot timer and the
reconciler so that they draw on one request budget (Alpaca limits per account)."""

from __future__ import annotations

import asyncio
import logging

from streams.broker.alpaca import AlpacaBroker
from streams.broker.http import TlsContexts
from streams.domain.accounts import Account
from streams.settings import Settings

log = logging.getLogger(__name__)

# Broker calls in flight at once, all accounts of the process together (see
# streams/broker/alpaca.py): enough for every lane of a worker to have a call out at the same
# time on a small box, few enough that a timer fanning out to every account does not open
# hundreds of requests at once (and, with TORGHUT_BROKER_HTTP=alpaca-py, that the event loop
# keeps the GIL when it needs it).
CALL_SLOTS = 16


class BrokerPool:
    def __init__(self, settings: Settings, call_slots: int = CALL_SLOTS) -> None:
        self._settings = settings
        self._brokers: dict[str, AlpacaBroker] = {}
        self._slots = asyncio.Semaphore(call_slots)
        self._tls = TlsContexts()

    def for_account(self, account: Account) -> AlpacaBroker:
        broker = self._brokers.get(account.label)
        if broker is None:
            broker = AlpacaBroker(
                account,
                timeout_seconds=self._settings.broker_timeout_seconds,
                rate_limit_per_minute=self._settings.broker_rate_limit_per_minute,
                call_slots=self._slots,
                http=self._settings.broker_http,
                tls=self._tls,
            )
            self._brokers[account.label] = broker
        return broker

    async def close(self) -> None:
        """Close every account's HTTP session (or thread pool), each even if another fails."""
        brokers = list(self._brokers.values())
        self._brokers.clear()
        for broker in brokers:
            try:
                await broker.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                log.warning("closing the broker of %s failed: %s", broker.label, type(exc).__name__)
