"""Start-up check of the account registry: a bad registry stops the worker before it starts."""

from __future__ import annotations

import logging
import sys

from streams.domain.accounts import AccountConfigError, AccountRegistry, load_registry
from streams.settings import Settings

log = logging.getLogger(__name__)

EX_CONFIG = 78  # sysexits.h: configuration error


def load_accounts(settings: Settings) -> AccountRegistry:
    """The registry, or exit the process with a clear message (never a secret, no traceback).

    Missing single-account credentials only disable that lane (`strict=False`); anything else
    (a live account without TRADING_LIVE_ENABLED, duplicate labels, bad JSON) refuses to start.
    """
    try:
        return load_registry(settings, strict=False)
    except AccountConfigError as exc:
        log.critical("refusing to start: %s", exc)
        print(f"torghut-streams: refusing to start: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EX_CONFIG) from None
