"""Config loading (JSON, YAML, dict, list), validation, and the CLI's flag handling."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from simulator.__main__ import build_parser, config_from_args, main
from simulator.config import config_to_mapping, load_config
from simulator.faults import Faults
from simulator.signals import price_from_signal


def test_json_yaml_dict_and_list_forms(tmp_path: Path) -> None:
    accounts = [{"label": "x", "key": "K", "secret": "S", "cash": 2500, "shorting_allowed": True}]
    as_json = tmp_path / "accounts.json"
    as_json.write_text(json.dumps({"accounts": accounts, "prices": {"AAPL": "101.5"}}))
    as_yaml = tmp_path / "accounts.yaml"
    as_yaml.write_text(
        "accounts:\n  - {label: x, key: K, secret: S, cash: 2500, shorting_allowed: true}\n"
        "prices: {AAPL: '101.5'}\n"
    )
    for cfg in (load_config(as_json), load_config(as_yaml)):
        (account,) = cfg.accounts
        assert (account.label, account.cash, account.shorting_allowed) == ("x", 2500, True)
        assert cfg.prices["AAPL"] == Decimal("101.5") and "BTC/USD" in cfg.prices
    assert load_config(accounts).accounts[0].key == "K"
    assert load_config(None).accounts[0].label == "default"
    cfg = load_config(
        {"accounts": accounts, "assets": [{"symbol": "IBM", "exchange": "NYSE", "price": "150"}]}
    )
    assert load_config(config_to_mapping(cfg)) == cfg  # round trip used by SimulatorProcess


@pytest.mark.parametrize(
    "raw",
    [
        {"accounts": [{"key": "K", "secret": "S"}, {"key": "K", "secret": "T"}]},
        {"accounts": [{"label": "a", "key": "K"}]},
        {"prices": {"NOPE": "1"}},
        {"partial_fill_prob": 2},
        {"rate_limit_per_minute": 0},
    ],
)
def test_invalid_configs_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        load_config(raw)


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"seed": 1, "accounts": [{"key": "K", "secret": "S"}]}))
    args = build_parser().parse_args(
        ["--config", str(path), "--seed", "7", "--partial-fill-prob", "0.1", "--manual-clock"]
    )
    cfg = config_from_args(args)
    assert (cfg.seed, cfg.partial_fill_prob, cfg.manual_clock) == (7, 0.1, True)
    assert main(["--config", str(tmp_path / "missing.json")]) == 2


def test_fault_switch_parsing() -> None:
    faults = Faults()
    faults.update({"duplicate_events": 2, "http_5xx": 1, "methods": ["post"], "hang_seconds": 1})
    assert faults.duplicate_next_events == 2 and faults.methods == ("POST",)
    assert faults.take_request_fault("GET") is None
    assert faults.take_request_fault("POST") == "http_5xx"
    assert faults.take_request_fault("POST") is None
    for bad in (
        {"drop_next_events": -1},
        {"reorder_events": 1},
        {"nope": 1},
        {"http_5xx_status": 404},
    ):
        with pytest.raises(ValueError):
            Faults().update(bad)


def test_price_from_ta_signal() -> None:
    assert price_from_signal({"symbol": "A", "close": 10, "vwap": {"session": 11}}) == 10
    assert price_from_signal({"symbol": "A", "vwap": {"session": None, "w5m": 12.5}}) == Decimal(
        "12.5"
    )
    assert price_from_signal({"symbol": "A", "vwap_session": "13"}) == 13  # ClickHouse columns
    imbalance = {"bid_px": 9.9, "ask_px": 10.1, "spread": 0.2}
    assert price_from_signal({"symbol": "A", "imbalance": imbalance}) == 10
    assert price_from_signal({"symbol": "A", "rsi14": 40}) is None
