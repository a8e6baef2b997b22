"""Pure helpers of the inspection commands (`lanes`, `lag`, `ledger`): merging and formatting."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from streams.observability.lag import PartitionLag


def merge_lanes(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """One entry per account over several workers' status pages; the owning worker wins."""
    merged: dict[str, dict[str, Any]] = {}
    for snapshot in snapshots:
        for account, lane in snapshot.get("accounts", {}).items():
            current = merged.get(account)
            if current is None or (lane.get("owned") and not current.get("owned")):
                merged[account] = dict(lane)
    return dict(sorted(merged.items()))


def _at(event: Mapping[str, Any] | None) -> str:
    return str(event["at"]) if event else "-"


def lane_rows(lanes: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for account, lane in lanes.items():
        error = lane.get("last_error")
        lag = lane.get("lag") or []
        rows.append(
            [
                account,
                "yes" if lane.get("enabled") else "no",
                str(lane.get("mode") or "-"),
                {True: "here", False: "elsewhere", None: "?"}[lane.get("owned")],
                "up" if lane.get("up") else "down",
                "ok" if lane.get("healthy") else ",".join(lane.get("problems", [])),
                "ENGAGED" if lane.get("kill_switch", {}).get("engaged") else "-",
                str((lane.get("trading_state") or {}).get("state") or "active"),
                _at(lane.get("last_decision")),
                _at(lane.get("last_submission")),
                f"{error['kind']}: {error['message']}"[:60] if error else "-",
                str(sum(int(p.get("lag", 0)) for p in lag)),
            ]
        )
    return rows


LANE_HEADERS = [
    "account",
    "enabled",
    "mode",
    "runs",
    "up",
    "health",
    "kill switch",
    "trading",
    "last decision",
    "last submission",
    "last error",
    "lag",
]


def lag_rows(rows: Iterable[PartitionLag]) -> list[list[str]]:
    return [
        [
            r.topic,
            str(r.partition),
            "-" if r.committed is None else str(r.committed),
            str(r.end),
            str(r.lag),
            f"{r.lag_seconds:.1f}",
        ]
        for r in rows
    ]


def jsonable(value: Any) -> Any:
    """A decoded table key/value as plain JSON data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if hasattr(value, "asdict"):
        return jsonable(value.asdict())
    if isinstance(value, bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value.decode(errors="replace")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


ACCOUNT_FIELDS = ("account_label", "account", "alpaca_account_label")
HASH_FIELDS = ("decision_hash", "client_order_id")


def _field(value: Any, names: Sequence[str]) -> str | None:
    """The first of `names` in a mapping, or in its nested `decision` (a ledger entry)."""
    if not isinstance(value, Mapping):
        return None
    for name in names:
        if value.get(name) is not None:
            return str(value[name])
    return _field(value.get("decision"), names) if "decision" in value else None


def _key_parts(key: Any) -> list[str]:
    text = key if isinstance(key, str) else json.dumps(key, default=str)
    return re.split(r"[|:/]", text)


def entry_matches(key: Any, value: Any, account: str, decision_hash: str | None) -> bool:
    """The entry belongs to `account` (and is decision `decision_hash` when given)."""
    parts = _key_parts(key)
    owner = _field(value, ACCOUNT_FIELDS) or _field(key, ACCOUNT_FIELDS)
    if owner is not None:
        if owner != account:
            return False
    elif account not in parts:
        return False
    if decision_hash is None:
        return True
    found = _field(value, HASH_FIELDS) or _field(key, HASH_FIELDS)
    return found == decision_hash if found is not None else decision_hash in parts
