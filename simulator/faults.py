"""Per-account fault switches, set through ``POST /admin/accounts/{label}/faults``.

Counters (``int``) are consumed one per matching occurrence and switch themselves off at zero;
flags stay on until cleared with ``DELETE``. See README.md for the exact semantics.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

REQUEST_FAULTS = ("force_429", "http_5xx", "hang_next")


@dataclass(slots=True)
class Faults:
    # Stream faults, applied to the account's event sequence before fan-out.
    drop_next_events: int = 0
    duplicate_events: bool = False  # every event delivered twice (same execution_id)
    duplicate_next_events: int = 0  # the next N events delivered twice
    reorder_events: bool = False  # events delivered in swapped pairs
    # POST /v2/orders faults, applied once an order has been accepted.
    delay_post_response_ms: int = 0
    post_504_after_accept: int = 0
    hang_after_accept: int = 0
    reject_next_orders: int = 0  # accepted, then new -> rejected on the stream
    # Request faults, applied to any authenticated /v2 request before it is processed.
    force_429: int = 0
    http_5xx: int = 0
    http_5xx_status: int = 500
    hang_next: int = 0
    hang_seconds: float | None = None  # None: until the client disconnects or hang_max_s
    methods: tuple[str, ...] = ()  # limit request faults to these HTTP methods; () = all

    def update(self, raw: Mapping[str, Any]) -> None:
        """Merge a JSON object into the switches; unknown names or bad types raise ValueError."""
        known = {f.name for f in fields(self)}
        for name, value in raw.items():
            if (
                name == "duplicate_events"
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                # {"duplicate_events": 3} means "the next 3 events".
                self.duplicate_next_events = _count(name, value)
                continue
            if name not in known:
                raise ValueError(f"unknown fault {name!r}")
            current = getattr(self, name)
            if name == "methods":
                if not isinstance(value, list) or not all(isinstance(m, str) for m in value):
                    raise ValueError("methods must be a list of HTTP method names")
                self.methods = tuple(m.upper() for m in value)
            elif name == "hang_seconds":
                if value is not None and (
                    isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
                ):
                    raise ValueError("hang_seconds must be a number >= 0 or null")
                self.hang_seconds = None if value is None else float(value)
            elif isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
                setattr(self, name, value)
            else:
                setattr(self, name, _count(name, value))
        if not 500 <= self.http_5xx_status <= 599:
            raise ValueError("http_5xx_status must be a 5xx status")

    def take(self, name: str) -> bool:
        """Consume one unit of a counter; True if the fault fires."""
        value: int = getattr(self, name)
        if value <= 0:
            return False
        setattr(self, name, value - 1)
        return True

    def take_request_fault(self, method: str) -> str | None:
        """The request fault that fires for this request, if any (429 first, then 5xx, hang)."""
        if self.methods and method.upper() not in self.methods:
            return None
        for name in REQUEST_FAULTS:
            if self.take(name):
                return name
        return None

    def to_json(self) -> dict[str, Any]:
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["methods"] = list(self.methods)
        return body


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0")
    return value
