"""Redaction of secrets from free text before it reaches a log line or a status page.

Delegates to `streams.domain.secrets.scrub` (the contracts' single definition) when it exists and
always applies a local pass for credential-shaped text as defence in depth.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from importlib import import_module

REDACTED = "***"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # user:password@ in URLs / DSNs
    (
        re.compile(r"(?P<pre>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]+:)[^@\s]+(?=@)"),
        rf"\g<pre>{REDACTED}",
    ),
    # key=value / key: value / "key": "value" for secret-looking keys
    (
        re.compile(
            r"(?i)(?P<pre>[\"']?(?:api[_-]?key(?:[_-]?id)?|secret(?:[_-]?key)?|password|passwd|"
            r"token|authorization|apca[_-]api[_-](?:key[_-]id|secret[_-]key))[\"']?\s*[:=]\s*"
            r"(?:bearer\s+)?[\"']?)[^\s\"',;}&]+"
        ),
        rf"\g<pre>{REDACTED}",
    ),
    # APCA-API-*-ID / -KEY HTTP header values
    (
        re.compile(r"(?i)(?P<pre>apca-api-(?:key-id|secret-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
        rf"\g<pre>{REDACTED}",
    ),
    (re.compile(r"(?i)(?P<pre>bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\g<pre>{REDACTED}"),
)

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a concrete secret value (e.g. from the account registry) to redact verbatim."""
    if value and len(value) >= 4:
        _registered.add(value)


def _domain_scrub() -> Callable[[str], str] | None:
    try:
        module = import_module("streams.domain.secrets")
    except ImportError:
        return None
    scrub = getattr(module, "scrub", None)
    return scrub if callable(scrub) else None


def scrub_text(text: str) -> str:
    """`text` with every known or credential-shaped secret replaced by `***`."""
    domain = _domain_scrub()
    if domain is not None:
        # Redaction must never raise: on failure the local pass below still runs.
        with contextlib.suppress(Exception):
            text = str(domain(text))
    for value in sorted(_registered, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
