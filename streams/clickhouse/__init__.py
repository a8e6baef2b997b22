"""ClickHouse adapter: schema, keyset poll source, historical replay, TA freshness.

Nothing here imports clickhouse-connect at import time (see `client.py`).
"""
