"""Observability fixtures: head-schema databases (shared with the persistence tests), and a worker
with traffic for the operator-tool tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.observability.trading import TradingWorker, trading_worker
from tests.integration.persistence.conftest import head_dsn, head_template
from tests.support.stack import StackInfo

__all__ = ["head_dsn", "head_template"]


@pytest.fixture(scope="module")
def ops_worker(
    stack: StackInfo, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TradingWorker]:
    """One worker with traffic on a trading, a kill-switched and a failing lane (trading.py) for
    the operator-tool tests (Prometheus, the browser); stopped when the module ends."""
    yield from trading_worker(stack, head_template, tmp_path_factory.mktemp("ops"))
