"""Connection facts of the local stack started by `make test` (stack/stack.py)."""

from __future__ import annotations

import os
import re
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV_FILE = ROOT / ".cache" / "stack" / "env"


@dataclass(frozen=True)
class StackInfo:
    kafka_brokers: str  # kafka://127.0.0.1:PORT
    database_url: str  # postgresql://postgres@127.0.0.1:PORT/torghut

    @property
    def bootstrap(self) -> str:
        return self.kafka_brokers.removeprefix("kafka://").replace(";", ",")

    def database(self, name: str) -> str:
        return re.sub(r"/[^/]*$", f"/{name}", self.database_url)


def stack_info() -> StackInfo | None:
    values = {k: os.environ[k] for k in ("KAFKA_BROKERS", "DATABASE_URL") if k in os.environ}
    if len(values) < 2 and ENV_FILE.exists():
        for line in ENV_FILE.read_text().splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            values.setdefault(key, value)
    if "KAFKA_BROKERS" not in values or "DATABASE_URL" not in values:
        return None
    return StackInfo(values["KAFKA_BROKERS"], values["DATABASE_URL"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# The per-account pre-trade controls (issue #17) limit what one account may send per second,
# per minute and per day, refuse repeated intents and price decisions against the TA stream:
# the tests and benchmarks of other parts send bursts and decisions without signals on purpose,
# so they run with those limits off; tests of the controls set them.
PRETRADE_OFF = {
    "TRADING_ORDER_RATE_PER_SECOND": "0",
    "TRADING_ORDER_RATE_PER_MINUTE": "0",
    "TRADING_DUPLICATE_INTENT_SECONDS": "0",
    "TRADING_DAILY_NOTIONAL_CAP": "0",
    "TRADING_MAX_OPEN_ORDERS": "0",
    "TRADING_PRICE_COLLAR_BPS": "0",
}


def app_env(tag: str, **extra: str) -> dict[str, str]:
    """Environment of an isolated app instance: its own app id (consumer group) and topics."""
    uid = unique(tag)
    return {
        **PRETRADE_OFF,
        "TORGHUT_APP_ID": uid,
        "TORGHUT_SIGNALS_TOPIC": f"{uid}.ta.signals.v1",
        "TORGHUT_DECISIONS_TOPIC": f"{uid}.trade-decisions.v1",
        "TRADING_ORDER_FEED_TOPIC": f"{uid}.trade-updates.v1",
        "TRADING_ORDER_FEED_TOPIC_V2": f"{uid}.trade-updates.v2",
        "TORGHUT_DLQ_TOPIC": f"{uid}.trading.dlq.v1",
        "TORGHUT_CONTROL_TOPIC": f"{uid}.control.v1",
        "TORGHUT_TOPIC_PARTITIONS": "4",
        **extra,
    }


def app_topics(env: dict[str, str]) -> list[str]:
    keys = (
        "TORGHUT_SIGNALS_TOPIC",
        "TORGHUT_DECISIONS_TOPIC",
        "TRADING_ORDER_FEED_TOPIC",
        "TRADING_ORDER_FEED_TOPIC_V2",
        "TORGHUT_DLQ_TOPIC",
        "TORGHUT_CONTROL_TOPIC",
    )
    return [env[k] for k in keys if env.get(k)]
