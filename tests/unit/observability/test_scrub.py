"""The fast paths of `scrub_text` (a substring test per registered secret; the credential
patterns skipped when no trigger word is present) redact exactly what the plain version does."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain import secrets
from streams.observability.scrub import _PATTERNS, scrub_text

SECRETS = ("PKTESTKEY1234567890AB", "sEcReT/with+chars=0123456789", "pw-short-9")


@pytest.fixture(autouse=True)
def registered() -> Iterator[None]:
    secrets.forget_all()
    secrets.register(*SECRETS)
    yield
    secrets.forget_all()


def reference(text: str) -> str:
    """Every secret by one regex alternation (longest first), then every pattern, always."""
    ordered = sorted(SECRETS, key=len, reverse=True)
    text = re.compile("|".join(re.escape(s) for s in ordered)).sub(secrets.REDACTED, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


PIECES = st.sampled_from(
    [
        *SECRETS,
        "order acknowledged by the broker in 35.5 ms",
        "postgresql://user:hunter2@db:5432/x",
        "api_key=abc123",
        "APCA-API-SECRET-KEY: zzz999",
        "Authorization: Bearer abcdefghijk",
        "token: tok_0987654321",
        "password='p4ss'",
        "\u017fecret=abc",  # U+017F (long s) matches `s` case-insensitively
        "KEY=\u212aelvin",
        " ",
        "\n",
        "account=alpha",
        "0f3a9c",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(PIECES, st.text(max_size=12)), max_size=8))
def test_scrub_text_redacts_what_the_plain_version_redacts(parts: list[str]) -> None:
    text = "".join(parts)
    assert scrub_text(text) == reference(text)


def test_every_registered_secret_is_removed_and_ordinary_text_is_untouched() -> None:
    line = f"GET failed key {SECRETS[0]} and {SECRETS[1]} ({SECRETS[2]})"
    out = scrub_text(line)
    assert all(s not in out for s in SECRETS) and out.count(secrets.REDACTED) >= 3
    plain = "order acknowledged by the broker in 35.5 ms (a48d72908a08, attempt 1)"
    assert scrub_text(plain) == plain
