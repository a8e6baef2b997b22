"""Broker adapter: per account, alpaca-py's requests over aiohttp (or alpaca-py's own client in
a thread pool, `TORGHUT_BROKER_HTTP=alpaca-py`), rate-limited, errors classified.

The reconciler reuses the lanes' per-account clients (and so the same request budget) through the
worker context's `BrokerPool`.
"""

from streams.broker.alpaca import AlpacaBroker
from streams.broker.errors import BrokerError, ErrorClass
from streams.broker.pool import BrokerPool

__all__ = ["AlpacaBroker", "BrokerError", "BrokerPool", "ErrorClass"]
