"""Start-up checks of the worker: a bad account registry, live trading on unreplicated state,
or Kafka settings that cannot connect stop the worker before it starts (exit 78, no secret)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
from typing import NoReturn

from streams.domain.accounts import AccountConfigError, AccountRegistry, load_registry
from streams.kafka_security import KafkaConfigError, check_connection
from streams.settings import Settings

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error


def load_accounts(settings: Settings) -> AccountRegistry:
    """The registry, or exit the process with a clear message (never a secret, no traceback).

    Missing single-account credentials only disable that lane (`strict=False`); anything else
    (a live account without TRADING_LIVE_ENABLED, duplicate labels, bad JSON) refuses to start.
    """
    try:
        registry = load_registry(settings, strict=False)
    except AccountConfigError as exc:
        refuse(str(exc))
    problem = unreplicated_live_problem(settings, registry)
    if problem:
        refuse(problem)
    return registry


def refuse(reason: str) -> NoReturn:
    log.critical("refusing to start: %s", reason)
    print(f"torghut-streams: refusing to start: {reason}", file=sys.stderr, flush=True)
    raise SystemExit(EX_CONFIG) from None


def unreplicated_live_problem(settings: Settings, registry: AccountRegistry) -> str | None:
    """Live money on one copy of the ledger (replication factor 1) needs an explicit override."""
    if settings.topic_replication_factor > 1 or settings.allow_unreplicated_state:
        return None
    live = [a.label for a in registry.enabled() if a.is_live]
    if not live:
        return None
    return (
        f"live account(s) {', '.join(live)} with TORGHUT_TOPIC_REPLICATION_FACTOR=1: the ledger "
        "written before each order would be one copy on one disk; use 3 (the default) or set "
        "TORGHUT_ALLOW_UNREPLICATED_STATE=true"
    )


def check_kafka(settings: Settings, timeout: float = 30.0) -> None:
    """Connect once with the configured security; exit with a clear reason when that fails.
    Runs in its own thread and event loop: faust calls the start-up hooks synchronously."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        try:
            pool.submit(asyncio.run, check_connection(settings, timeout)).result()
        except KafkaConfigError as exc:
            refuse(str(exc))
