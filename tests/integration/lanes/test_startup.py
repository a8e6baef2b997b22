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


def test_a_negative_or_unknown_account_limit_is_refused_at_start(
    stack: StackInfo, tmp_path, workers: list[Worker]
) -> None:
    accounts = [
        {
            "label": "small",
            "mode": "paper",
            "api_key": "AKSMALLKEY123",
            "secret_key": "small-secret-do-not-print",
            "base_url": "http://127.0.0.1:9",
            "limits": {"daily_notional_cap": -100, "max_orders_per_day": 3},
        }
    ]
    env = app_env(
        "limits",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=json.dumps(accounts),
    )
    worker = Worker(stack, env, tmp_path)
    workers.append(worker.start())
    assert worker.wait_exit(timeout=120) == EX_CONFIG
    assert "refusing to start" in worker.output
    assert "'small': limits.daily_notional_cap: Input should be greater than or equal to 0" in (
        worker.output
    )
    assert "'small': limits.max_orders_per_day: unknown limit (known: max_order_qty" in (
        worker.output
    )
    assert "small-secret-do-not-print" not in worker.output
