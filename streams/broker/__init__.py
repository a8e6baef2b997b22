"""Broker adapter: alpaca-py per account, in a thread pool, rate-limited, errors classified.

The order feed's reconciler reuses the same per-account clients (and so the same request budget)
through `get_broker_pool().for_account(account)`.
"""

from streams.broker.alpaca import AlpacaBroker
from streams.broker.errors import BrokerError, ErrorClass
from streams.broker.pool import BrokerPool, get_broker_pool

__all__ = ["AlpacaBroker", "BrokerError", "BrokerPool", "ErrorClass", "get_broker_pool"]
