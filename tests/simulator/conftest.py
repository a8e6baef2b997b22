"""Fixtures for the simulator tests: one in-process simulator per module, reset before each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simulator.testing import RunningSimulator

ACCOUNTS: dict[str, Any] = {
    "accounts": [
        {"label": "alpha", "key": "AK-ALPHA", "secret": "SK-ALPHA", "shorting_allowed": True},
        {"label": "beta", "key": "AK-BETA", "secret": "SK-BETA", "cash": "50000"},
        {"label": "small", "key": "AK-SMALL", "secret": "SK-SMALL", "cash": "1000"},
        {"label": "split", "key": "AK-SPLIT", "secret": "SK-SPLIT", "partial_fill_prob": 1.0},
        {"label": "limited", "key": "AK-LIM", "secret": "SK-LIM", "rate_limit_per_minute": 5},
    ]
}


@pytest.fixture(scope="module")
def sim() -> Iterator[RunningSimulator]:
    with RunningSimulator(ACCOUNTS, seed=7) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(request: pytest.FixtureRequest) -> None:
    if "sim" in request.fixturenames:
        request.getfixturevalue("sim").admin.reset()


@pytest.fixture
def client(sim: RunningSimulator) -> Callable[..., Any]:
    """``client("alpha")``: alpaca-py TradingClient; SDK retries kept, their 3 s sleep removed."""

    def make(label: str, retries: int = 3) -> Any:
        return sim.trading_client(label, retry_wait=0, retries=retries)

    return make
