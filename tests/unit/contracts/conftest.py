"""Settings built from a clean environment, and a planted secret that must never leak."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from streams.docs import env_name
from streams.domain import secrets
from streams.settings import Settings

PLANTED_KEY = "PKPLANTEDKEY0123456789"
PLANTED_SECRET = "PLANTEDSECRETxyz0123456789abcdefghij"

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeSettings]:
    """`make_settings(TRADING_MODE="live", ...)`: Settings from exactly these variables."""
    for name, info in Settings.model_fields.items():
        monkeypatch.delenv(env_name(name, info), raising=False)

    def make(**env: str) -> Settings:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    yield make
    secrets.forget_all()
