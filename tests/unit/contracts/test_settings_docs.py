"""The README configuration table is generated from the settings model and must not drift."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.docs import (
    END,
    FORWARDER_VARIABLES,
    START,
    current_block,
    env_name,
    main,
    replace_block,
    settings_table,
)
from streams.settings import Settings
from tests.support.stack import ROOT

README = ROOT / "README.md"
# Every environment variable the two seed documents name.
SEED_VARIABLES = {
    "APCA_API_KEY_ID",
    "APCA_API_SECRET_KEY",
    "APCA_API_BASE_URL",
    "TRADING_ACCOUNT_LABEL",
    "TRADING_ACCOUNTS_JSON",
    "TRADING_MULTI_ACCOUNT_ENABLED",
    "TRADING_KILL_SWITCH_ENABLED",
    "TRADING_ORDER_FEED_TOPIC",
    "TRADING_ORDER_FEED_TOPIC_V2",
    "TRADING_STRATEGY_RUNTIME_MODE",
    "TRADING_STRATEGY_SCHEDULER_ENABLED",
    "TRADING_STRATEGY_RUNTIME_FALLBACK_LEGACY",
    "TRADING_STRATEGY_RUNTIME_CIRCUIT_ERRORS",
    "TRADING_STRATEGY_RUNTIME_CIRCUIT_COOLDOWN_SECONDS",
    "TORGHUT_ACCOUNT_LABEL",
    "TOPIC_TRADE_UPDATES_V2",
}


def documented_variables(table: str) -> set[str]:
    return set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))


def test_every_setting_is_documented_with_its_variable_and_description() -> None:
    table = settings_table()
    for name, info in Settings.model_fields.items():
        variable = env_name(name, info)
        assert f"| `{variable}` |" in table, variable
        assert info.description, f"{variable} has no description"


def test_every_seed_variable_is_documented() -> None:
    assert documented_variables(settings_table()) >= SEED_VARIABLES
    settings_variables = {env_name(n, f) for n, f in Settings.model_fields.items()}
    assert SEED_VARIABLES - settings_variables == set(FORWARDER_VARIABLES)


def test_readme_block_matches_the_settings_model() -> None:
    document = README.read_text()
    assert START in document and END in document, "README.md lost its settings markers"
    assert current_block(document) == settings_table(), "stale: run `make docs`"
    assert main(["--check", str(README)]) == 0


def test_write_replaces_only_the_block(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    path.write_text(f"# title\n\nbefore\n{START}\nold table\n{END}\nafter\n")
    assert main(["--check", str(path)]) == 1
    assert main(["--write", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# title\n\nbefore\n") and text.endswith(f"{END}\nafter\n")
    assert "old table" not in text and main(["--check", str(path)]) == 0
    with pytest.raises(ValueError, match="no"):
        replace_block("no markers here", "x")
