"""Redaction of secrets from free text before it reaches a log line or a status page.

`streams.domain.secrets.scrub` removes every registered secret value (settings, account registry);
a pattern pass then removes credential-shaped text that was never registered (defence in depth).
"""

from __future__ import annotations

import re

from streams.domain.secrets import REDACTED, scrub

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


# Every pattern above needs one of these (ASCII text, lower-cased) to match: text without any
# of them is not searched (most log fields: hashes, labels, numbers).
_TRIGGERS = ("://", "key", "secret", "passw", "token", "authorization", "bearer")


def _may_hold_credentials(text: str) -> bool:
    if not text.isascii():
        return True  # case-insensitive matching beyond ASCII (e.g. U+017F): always searched
    lowered = text.lower()
    return any(trigger in lowered for trigger in _TRIGGERS)


def scrub_text(text: str) -> str:
    """`text` with every known or credential-shaped secret replaced by `***`."""
    text = scrub(text)
    if not _may_hold_credentials(text):
        return text
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
