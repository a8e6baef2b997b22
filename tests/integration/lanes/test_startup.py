"""A live account without TRADING_LIVE_ENABLED: the worker refuses to start, says why, and
shows no secret."""

from __future__ import annotations

import json

import pytest

from streams.context import EX_CONFIG
from tests.support.stack import StackInfo, app_env
from tests.support.worker import Worker

pytestmark = pytest.mark.integration


def test_live_account_without_live_permission_is_refused(
    stack: StackInfo, tmp_path, workers: list[Worker]
) -> None:
    accounts = [
        {
            "label": "live-main",
            "mode": "live",
            "api_key": "AKLIVEKEY123",
            "secret_key": "live-secret-do-not-print",
            "base_url": "https://api.alpaca.markets",
        }
    ]
    env = app_env(
        "refuse",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=json.dumps(accounts),
        TRADING_LIVE_ENABLED="false",
    )
    worker = Worker(stack, env, tmp_path)
    workers.append(worker.start())
    assert worker.wait_exit(timeout=120) == EX_CONFIG
    assert "refusing to start" in worker.output
    assert "live-main" in worker.output and "TRADING_LIVE_ENABLED" in worker.output
    assert "live-secret-do-not-print" not in worker.output
    assert "AKLIVEKEY123" not in worker.output
