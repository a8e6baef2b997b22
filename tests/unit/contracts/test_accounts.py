"""Account registry: every bad input gives its own error naming entry and field; no secret leaks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from streams.domain.accounts import (
    AccountConfigError,
    AccountMode,
    check_configuration,
    load_registry,
    validate_label,
)
from tests.unit.contracts.conftest import PLANTED_KEY, PLANTED_SECRET, MakeSettings


def entry(label: str = "alpha", **changes: Any) -> dict[str, Any]:
    base = {
        "label": label,
        "mode": "paper",
        "api_key": f"{PLANTED_KEY}-{label}",
        "secret_key": f"{PLANTED_SECRET}-{label}",
        "base_url": "http://127.0.0.1:18080",
        "enabled": True,
    }
    base.update(changes)
    return base


def multi(make_settings: MakeSettings, document: Any, **env: str) -> Any:
    return make_settings(
        TRADING_MULTI_ACCOUNT_ENABLED="true", TRADING_ACCOUNTS_JSON=json.dumps(document), **env
    )


def errors_of(make_settings: MakeSettings, document: Any, **env: str) -> list[str]:
    with pytest.raises(AccountConfigError) as caught:
        load_registry(multi(make_settings, document, **env))
    text = str(caught.value) + repr(caught.value)
    assert PLANTED_KEY not in text and PLANTED_SECRET not in text
    return caught.value.errors


# ---------------------------------------------------------------- good registries


@pytest.mark.parametrize("wrap", [lambda e: e, lambda e: {"accounts": e}])
def test_array_or_object_registry(make_settings: MakeSettings, wrap: Any) -> None:
    document = wrap([entry("alpha"), entry("beta", enabled=False, base_url="http://h:1/")])
    registry = load_registry(multi(make_settings, document, TRADING_ACCOUNT_LABEL="alpha"))
    assert registry.labels == ("alpha", "beta")
    assert [a.label for a in registry.enabled()] == ["alpha"]
    beta = registry.get("beta")
    assert beta is not None and beta.base_url == "http://h:1" and beta.broker_host == "h:1"
    assert registry.get("gamma") is None
    assert registry.multi_account and registry.source == "TRADING_ACCOUNTS_JSON"
    assert registry.warnings == ()


def test_defaults_mode_paper_and_its_broker(make_settings: MakeSettings) -> None:
    document = [{"label": "alpha", "api_key": "k-123", "secret_key": "s-123"}]
    registry = load_registry(multi(make_settings, document))
    account = registry.accounts[0]
    assert account.mode is AccountMode.paper and account.enabled
    assert account.broker_host == "paper-api.alpaca.markets"
    assert "not in the registry" in registry.warnings[0]  # TRADING_ACCOUNT_LABEL=paper


def test_live_account_with_permission(make_settings: MakeSettings) -> None:
    document = [entry("live", mode="live", base_url="https://api.alpaca.markets")]
    registry = load_registry(
        multi(make_settings, document, TRADING_LIVE_ENABLED="true", TRADING_ACCOUNT_LABEL="live")
    )
    assert registry.accounts[0].is_live


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_registry_file(make_settings: MakeSettings, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"accounts{suffix}"
    path.write_text(json.dumps({"accounts": [entry("alpha"), entry("beta")]}))
    settings = make_settings(TRADING_MULTI_ACCOUNT_ENABLED="true", TRADING_ACCOUNTS_FILE=str(path))
    registry = load_registry(settings)
    assert registry.labels == ("alpha", "beta") and str(path) in registry.source


def test_yaml_registry_file(make_settings: MakeSettings, tmp_path: Path) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(
        "accounts:\n"
        "  - label: alpha\n    mode: paper\n    api_key: k-alpha\n    secret_key: s-alpha\n"
        "  - label: beta\n    api_key: k-beta\n    secret_key: s-beta\n    enabled: false\n"
    )
    settings = make_settings(TRADING_MULTI_ACCOUNT_ENABLED="true", TRADING_ACCOUNTS_FILE=str(path))
    registry = load_registry(settings)
    assert [a.label for a in registry.enabled()] == ["alpha"]


# ---------------------------------------------------------------- each bad input, its error


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([entry("alpha"), entry("alpha")], "accounts[1] 'alpha': label: duplicate of accounts[0]"),
        ([entry("Alpha")], "accounts[0]: label: must be 1-64 characters"),
        ([entry("a:b")], "accounts[0]: label: must be"),
        ([entry("x" * 65)], "accounts[0]: label: must be"),
        ([entry(mode="demo")], "accounts[0] 'alpha': mode: Input should be 'paper' or 'live'"),
        ([entry(mode="live")], "accounts[0] 'alpha': mode: live requires TRADING_LIVE_ENABLED"),
        ([entry(api_key="")], "accounts[0] 'alpha': api_key: must not be empty"),
        ([entry(secret_key="  ")], "accounts[0] 'alpha': secret_key: must not be empty"),
        ([{"label": "alpha", "api_key": "k-1"}], "accounts[0] 'alpha': secret_key: Field required"),
        ([entry(enable=False)], "accounts[0] 'alpha': enable: Extra inputs are not permitted"),
        ([entry(enabled="maybe")], "accounts[0] 'alpha': enabled: Input should be a valid boolean"),
        ([entry(base_url="ftp://h")], "accounts[0] 'alpha': base_url: must be an http(s) URL"),
        ([entry(base_url="http://h/v2")], "accounts[0] 'alpha': base_url: drop the trailing /v2"),
        (
            [entry(base_url="https://api.alpaca.markets")],
            "accounts[0] 'alpha': base_url: a paper account points at the live broker",
        ),
        (
            [entry(base_url="http://user:pw-12345@h")],
            "accounts[0] 'alpha': base_url: must not contain credentials",
        ),
        (
            [entry("alpha"), entry("beta", api_key=f"{PLANTED_KEY}-alpha")],
            "accounts[1] 'beta': api_key: same broker key as accounts[0]",
        ),
        ([], "TRADING_ACCOUNTS_JSON: the registry has no accounts"),
        ([5], "accounts[0]: must be an object"),
        ({"acounts": []}, 'TRADING_ACCOUNTS_JSON: expected an array of accounts or {"accounts"'),
        ({"accounts": [entry()], "x": 1}, "TRADING_ACCOUNTS_JSON: unknown top-level field(s): x"),
    ],
)
def test_each_bad_entry_gives_its_error(
    make_settings: MakeSettings, document: Any, expected: str
) -> None:
    errors = errors_of(make_settings, document)
    assert any(e.startswith(expected) for e in errors), errors


def test_all_problems_are_reported_at_once(make_settings: MakeSettings) -> None:
    document = [entry("alpha", mode="live"), entry("alpha", base_url="x"), entry("Bad")]
    errors = errors_of(make_settings, document)
    assert len(errors) == 4, errors


def test_bad_json_names_the_position_not_the_content(make_settings: MakeSettings) -> None:
    settings = make_settings(
        TRADING_MULTI_ACCOUNT_ENABLED="true",
        TRADING_ACCOUNTS_JSON=f'[{{"label": "a", "api_key": "{PLANTED_KEY}",]',
    )
    with pytest.raises(AccountConfigError) as caught:
        load_registry(settings)
    assert caught.value.errors[0].startswith("TRADING_ACCOUNTS_JSON: invalid JSON at line 1")
    assert PLANTED_KEY not in str(caught.value)


def test_bad_yaml_names_the_position_not_the_content(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    path = tmp_path / "accounts.yaml"
    path.write_text(f"- label: a\n  api_key: {PLANTED_KEY}\n   secret_key: [{PLANTED_SECRET}\n")
    settings = make_settings(TRADING_MULTI_ACCOUNT_ENABLED="true", TRADING_ACCOUNTS_FILE=str(path))
    with pytest.raises(AccountConfigError) as caught:
        load_registry(settings)
    text = str(caught.value)
    assert "invalid YAML at line" in text
    assert PLANTED_KEY not in text and PLANTED_SECRET not in text


def test_missing_registry_file(make_settings: MakeSettings, tmp_path: Path) -> None:
    settings = make_settings(
        TRADING_MULTI_ACCOUNT_ENABLED="true", TRADING_ACCOUNTS_FILE=str(tmp_path / "nope.yaml")
    )
    with pytest.raises(AccountConfigError, match="file not found"):
        load_registry(settings)


def test_both_registry_sources_is_an_error(make_settings: MakeSettings, tmp_path: Path) -> None:
    with pytest.raises(AccountConfigError, match="set only one"):
        load_registry(multi(make_settings, [entry()], TRADING_ACCOUNTS_FILE=str(tmp_path)))


def test_a_secret_pasted_into_the_label_is_not_echoed(make_settings: MakeSettings) -> None:
    errors = errors_of(make_settings, [entry(label=PLANTED_SECRET)])
    assert errors == ["accounts[0]: label: must be " + errors[0].split("must be ", 1)[1]]


# ---------------------------------------------------------------- single-account mode


def test_single_account_from_apca_variables(make_settings: MakeSettings) -> None:
    settings = make_settings(
        APCA_API_KEY_ID=PLANTED_KEY,
        APCA_API_SECRET_KEY=PLANTED_SECRET,
        APCA_API_BASE_URL="http://127.0.0.1:9999/",
        TRADING_ACCOUNT_LABEL="primary",
    )
    registry = load_registry(settings)
    (account,) = registry.accounts
    assert (account.label, account.mode, account.base_url, account.enabled) == (
        "primary",
        AccountMode.paper,
        "http://127.0.0.1:9999",
        True,
    )
    assert account.api_key.get_secret_value() == PLANTED_KEY
    assert not registry.multi_account


def test_multi_account_off_ignores_the_registry(make_settings: MakeSettings) -> None:
    settings = make_settings(
        TRADING_ACCOUNTS_JSON=json.dumps([entry("alpha"), entry("beta")]),
        APCA_API_KEY_ID="k-1234",
        APCA_API_SECRET_KEY="s-1234",
    )
    assert load_registry(settings).labels == ("paper",)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"APCA_API_SECRET_KEY": "s-1234"}, ["APCA_API_KEY_ID: not set"]),
        ({"APCA_API_KEY_ID": "k-1234"}, ["APCA_API_SECRET_KEY: not set"]),
        ({}, ["APCA_API_KEY_ID: not set", "APCA_API_SECRET_KEY: not set"]),
        (
            {"TRADING_MODE": "demo", **{"APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"}},
            ["TRADING_MODE: must be paper or live"],
        ),
        (
            {"TRADING_MODE": "live", "APCA_API_KEY_ID": "k", "APCA_API_SECRET_KEY": "s"},
            [
                "TRADING_MODE: live requires TRADING_LIVE_ENABLED=true",
                "APCA_API_BASE_URL: a live account points at the paper broker",
            ],
        ),
        (
            {
                "TRADING_ACCOUNT_LABEL": "Primary!",
                "APCA_API_KEY_ID": "k",
                "APCA_API_SECRET_KEY": "s",
            },
            ["TRADING_ACCOUNT_LABEL: must be"],
        ),
    ],
)
def test_single_account_errors_name_the_variable(
    make_settings: MakeSettings, env: dict[str, str], expected: list[str]
) -> None:
    with pytest.raises(AccountConfigError) as caught:
        load_registry(make_settings(**env))
    assert len(caught.value.errors) == len(expected)
    for error, prefix in zip(caught.value.errors, expected, strict=True):
        assert error.startswith(prefix), caught.value.errors


def test_missing_credentials_can_be_left_to_the_worker(make_settings: MakeSettings) -> None:
    registry = load_registry(make_settings(), strict=False)
    (account,) = registry.accounts
    assert not account.enabled and not account.has_credentials
    assert registry.enabled() == ()
    assert registry.warnings[0].startswith("APCA_API_KEY_ID: not set")


# ---------------------------------------------------------------- check and secrets


def test_check_reports_an_inactive_registry(make_settings: MakeSettings) -> None:
    settings = make_settings(
        TRADING_ACCOUNTS_JSON=json.dumps([entry("alpha", mode="live")]),
        APCA_API_KEY_ID="k-1234",
        APCA_API_SECRET_KEY="s-1234",
        TRADING_FLAGS_FILE="/nonexistent/flags.yaml",
    )
    report = check_configuration(settings)
    assert not report.ok and report.registry is not None
    assert report.errors == (
        "(inactive registry) accounts[0] 'alpha': mode: live requires TRADING_LIVE_ENABLED=true",
        "TRADING_FLAGS_FILE: file not found (/nonexistent/flags.yaml)",
    )
    assert "TRADING_MULTI_ACCOUNT_ENABLED=false" in report.warnings[0]


def test_secrets_never_appear_in_repr_str_or_dumps(make_settings: MakeSettings) -> None:
    registry = load_registry(multi(make_settings, [entry("alpha"), entry("beta")]))
    account = registry.accounts[0]
    texts = [
        repr(registry),
        str(registry),
        repr(account),
        str(account),
        account.model_dump_json(),
        json.dumps(account.public_view()),
        str(account.model_dump()),
    ]
    for text in texts:
        assert PLANTED_KEY not in text and PLANTED_SECRET not in text, text
    assert set(account.public_view()) == {"label", "mode", "enabled", "broker_host"}


@pytest.mark.parametrize("label", ["paper", "live", "acct-1", "a", "x_y", "0" * 64])
def test_valid_labels(label: str) -> None:
    assert validate_label(label) == label


@pytest.mark.parametrize("label", ["", "Paper", "-a", "a b", "a/b", "a:b", "*", "é", "0" * 65])
def test_invalid_labels(label: str) -> None:
    with pytest.raises(ValueError, match="account label"):
        validate_label(label)
