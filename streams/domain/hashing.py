"""Decision hash: the idempotency key of a decision and its broker `client_order_id`."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from schemas.common import iso_millis


def decision_hash(
    *,
    account_label: str,
    symbol: str,
    timeframe: str,
    event_ts: datetime,
    action: str,
) -> str:
    """sha256 hex over canonical JSON of the decision's identity, and nothing else.

    The identity is the aggregated intent's: account, symbol, timeframe, signal event time and
    action. The winning strategy is deliberately excluded (it depends on runtime state: circuit
    breakers, the legacy fallback), and so are sizing, telemetry and params: a signal re-evaluated
    after a crash, on another worker or after equity changed gives the same hash. The account is
    always inside, so the hash (and the client order id) is unique across accounts.
    """
    identity = {
        "account_label": account_label,
        "symbol": symbol,
        "timeframe": timeframe,
        "event_ts": iso_millis(event_ts),
        "action": action,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
