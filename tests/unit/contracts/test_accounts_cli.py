"""`faust -A streams.app accounts [--check]` as an operator runs it: output, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from streams.docs import env_name
from streams.settings import Settings
from tests.support.stack import ROOT
from tests.unit.contracts.conftest import PLANTED_KEY, PLANTED_SECRET

SETTINGS_VARIABLES = {env_name(n, f) for n, f in Settings.model_fields.items()}


def run_accounts(
    *args: str, options: tuple[str, ...] = (), **env: str
) -> subprocess.CompletedProcess[str]:
    """`faust [options] -A streams.app accounts [args]` with exactly `env` as configuration."""
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "faust", *options, "-A", "streams.app", "accounts", *args],
        cwd=ROOT,
        env={**clean, "TORGHUT_LOG_FORMAT": "text", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def registry(*entries: dict[str, Any]) -> str:
    return json.dumps({"accounts": list(entries)})


def account(label: str, **changes: Any) -> dict[str, Any]:
    return {
        "label": label,
        "mode": "paper",
        "api_key": f"{PLANTED_KEY}{label}",
        "secret_key": f"{PLANTED_SECRET}{label}",
        "base_url": "http://127.0.0.1:18080",
        **changes,
    }


def assert_no_secret(result: subprocess.CompletedProcess[str]) -> None:
    for text in (result.stdout, result.stderr):
        assert PLANTED_KEY not in text and PLANTED_SECRET not in text, text


@pytest.mark.parametrize("check", [False, True])
def test_lists_the_lanes(check: bool) -> None:
    result = run_accounts(
        *(["--check"] if check else []),
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=registry(account("alpha"), account("beta", enabled=False)),
        TRADING_ACCOUNT_LABEL="alpha",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(
        "alpha" in ln and "paper" in ln and "yes" in ln and "127.0.0.1:18080" in ln for ln in lines
    )
    assert any("beta" in ln and "no" in ln for ln in lines)
    assert "source: TRADING_ACCOUNTS_JSON; lanes: alpha" in result.stdout
    assert ("configuration OK" in result.stdout) is check
    assert_no_secret(result)


def test_json_listing() -> None:
    result = run_accounts(
        options=("--json",), APCA_API_KEY_ID=PLANTED_KEY, APCA_API_SECRET_KEY=PLANTED_SECRET
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [
        {
            "label": "paper",
            "mode": "paper",
            "enabled": True,
            "broker_host": "paper-api.alpaca.markets",
        }
    ]
    assert_no_secret(result)


def test_check_prints_every_error_and_exits_non_zero() -> None:
    # The worker-init hook of the lanes (agents/lanes.py) may refuse an invalid registry before
    # the command runs (exit 78, its own format): either way every error is printed.
    result = run_accounts(
        "--check",
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=registry(
            account("alpha", mode="live"),
            account("alpha"),
            account("beta", api_key=f"{PLANTED_KEY}alpha"),
            account(PLANTED_SECRET),
        ),
    )
    assert result.returncode != 0
    for error in [
        "accounts[0] 'alpha': mode: live requires TRADING_LIVE_ENABLED=true",
        "accounts[3]: label: must be 1-64 characters of a-z, 0-9, '_' or '-', "
        "starting with a letter or digit",
        "accounts[1] 'alpha': label: duplicate of accounts[0]",
        "accounts[2] 'beta': api_key: same broker key as accounts[1]",
    ]:
        assert error in result.stderr, result.stderr
    assert_no_secret(result)


def test_check_validates_an_inactive_registry_too() -> None:
    result = run_accounts(
        "--check",
        TRADING_ACCOUNTS_JSON=registry(account("alpha"), account("alpha", mode="live")),
        APCA_API_KEY_ID=PLANTED_KEY,
        APCA_API_SECRET_KEY=PLANTED_SECRET,
    )
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert errors == [
        "error: (inactive registry) accounts[1] 'alpha': mode: live requires "
        "TRADING_LIVE_ENABLED=true",
        "error: (inactive registry) accounts[1] 'alpha': label: duplicate of accounts[0]",
    ]
    assert "configuration invalid: 2 error(s)" in result.stderr
    assert "warning: a registry is set but TRADING_MULTI_ACCOUNT_ENABLED=false" in result.stderr
    assert_no_secret(result)


def test_single_account_without_keys_fails_check_but_lists() -> None:
    checked = run_accounts("--check")
    assert checked.returncode == 1
    assert "error: APCA_API_KEY_ID: not set" in checked.stderr
    assert "error: APCA_API_SECRET_KEY: not set" in checked.stderr
    listed = run_accounts()
    assert listed.returncode == 0, listed.stderr
    assert "lanes: none" in listed.stdout and "warning: APCA_API_KEY_ID" in listed.stderr
