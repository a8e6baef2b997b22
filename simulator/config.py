"""Simulator configuration: accounts, assets, prices and knobs, from a JSON/YAML file or a dict.

Minimal file::

    {"accounts": [{"label": "alpha", "key": "AK1", "secret": "S1", "cash": "100000",
                   "shorting_allowed": true}]}

A top-level list is read as the account list. Everything else has defaults (see README.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .assets import DEFAULT_ASSETS, DEFAULT_PRICES, Asset, asset_from_mapping
from .formats import parse_ts, to_decimal


@dataclass(frozen=True, slots=True)
class AccountConfig:
    label: str
    key: str
    secret: str
    cash: Decimal = Decimal("100000")
    shorting_allowed: bool = False
    # Buying power = multiplier * equity - gross position value - open-order reservations.
    multiplier: Decimal = Decimal("1")
    # Per-account overrides of the global settings; None means "use the global value".
    rate_limit_per_minute: int | None = None
    partial_fill_prob: float | None = None


DEFAULT_ACCOUNT = AccountConfig(label="default", key="SIMKEY", secret="SIMSECRET")


@dataclass(frozen=True, slots=True)
class SimConfig:
    accounts: tuple[AccountConfig, ...] = (DEFAULT_ACCOUNT,)
    assets: tuple[Asset, ...] = DEFAULT_ASSETS
    prices: Mapping[str, Decimal] = field(default_factory=lambda: dict(DEFAULT_PRICES))
    seed: int = 0
    partial_fill_prob: float = 0.0
    max_partial_fills: int = 3  # executions per order when it is split (>= 2)
    crypto_fee_rate: Decimal = Decimal("0.0025")
    rate_limit_per_minute: int = 200
    rate_limit_window_s: float = 60.0
    fill_delay_ms: int = 0  # wait before each batch of acks/fills/cancels is processed
    manual_clock: bool = False
    start_time: datetime | None = None  # manual clock start; default 2026-01-05T15:00Z
    ws_binary_frames: bool = True  # paper sends JSON in binary frames
    hang_max_s: float = 300.0  # a "hang" fault closes the connection unanswered after this
    reorder_hold_ms: int = 100  # an event held for reordering is released after this
    event_log_size: int = 10_000  # per account, for GET /admin/accounts/{label}/events

    def with_overrides(self, **changes: Any) -> SimConfig:
        """Copy with the given non-None fields replaced (used by the CLI flags)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _account(raw: Mapping[str, Any], index: int) -> AccountConfig:
    try:
        key = str(raw["key"])
        secret = str(raw["secret"])
    except KeyError as exc:
        raise ValueError(f"account #{index}: missing {exc.args[0]!r}") from None
    rate = raw.get("rate_limit_per_minute")
    pfp = raw.get("partial_fill_prob")
    return AccountConfig(
        label=str(raw.get("label", f"account{index}")),
        key=key,
        secret=secret,
        cash=to_decimal(raw.get("cash", "100000"), "cash"),
        shorting_allowed=bool(raw.get("shorting_allowed", False)),
        multiplier=to_decimal(raw.get("multiplier", "1"), "multiplier"),
        rate_limit_per_minute=None if rate is None else int(rate),
        partial_fill_prob=None if pfp is None else float(pfp),
    )


def config_from_mapping(raw: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> SimConfig:
    if not isinstance(raw, Mapping):
        raw = {"accounts": list(raw)}
    accounts = tuple(_account(a, i) for i, a in enumerate(raw.get("accounts", [])))
    if not accounts:
        accounts = (DEFAULT_ACCOUNT,)
    assets: list[Asset] = list(DEFAULT_ASSETS) if raw.get("default_assets", True) else []
    prices: dict[str, Decimal] = dict(DEFAULT_PRICES) if raw.get("default_assets", True) else {}
    for item in raw.get("assets", []):
        asset = asset_from_mapping(item)
        assets = [a for a in assets if a.symbol != asset.symbol] + [asset]
        if "price" in item:
            prices[asset.symbol] = to_decimal(item["price"], f"{asset.symbol} price")
    for symbol, price in dict(raw.get("prices", {})).items():
        prices[str(symbol).upper()] = to_decimal(price, f"{symbol} price")
    start = raw.get("start_time")
    cfg = SimConfig(
        accounts=accounts,
        assets=tuple(assets),
        prices=prices,
        seed=int(raw.get("seed", 0)),
        partial_fill_prob=float(raw.get("partial_fill_prob", 0.0)),
        max_partial_fills=int(raw.get("max_partial_fills", 3)),
        crypto_fee_rate=to_decimal(raw.get("crypto_fee_rate", "0.0025"), "crypto_fee_rate"),
        rate_limit_per_minute=int(raw.get("rate_limit_per_minute", 200)),
        rate_limit_window_s=float(raw.get("rate_limit_window_s", 60.0)),
        fill_delay_ms=int(raw.get("fill_delay_ms", 0)),
        manual_clock=bool(raw.get("manual_clock", False)),
        start_time=None if start is None else parse_ts(str(start)),
        ws_binary_frames=bool(raw.get("ws_binary_frames", True)),
        hang_max_s=float(raw.get("hang_max_s", 300.0)),
        reorder_hold_ms=int(raw.get("reorder_hold_ms", 100)),
        event_log_size=int(raw.get("event_log_size", 10_000)),
    )
    validate(cfg)
    return cfg


def validate(cfg: SimConfig) -> None:
    labels = [a.label for a in cfg.accounts]
    keys = [a.key for a in cfg.accounts]
    if len(set(labels)) != len(labels):
        raise ValueError("account labels must be unique")
    if len(set(keys)) != len(keys):
        raise ValueError("account keys must be unique")
    known = {a.symbol for a in cfg.assets}
    unknown = set(cfg.prices) - known
    if unknown:
        raise ValueError(f"prices for unknown symbols: {sorted(unknown)}")
    for p in [cfg.partial_fill_prob] + [
        a.partial_fill_prob for a in cfg.accounts if a.partial_fill_prob is not None
    ]:
        if not 0.0 <= p <= 1.0:
            raise ValueError("partial_fill_prob must be within [0, 1]")
    if cfg.max_partial_fills < 2:
        raise ValueError("max_partial_fills must be >= 2")
    if cfg.rate_limit_per_minute < 1:
        raise ValueError("rate_limit_per_minute must be >= 1 (raise it for benchmarks)")
    for account in cfg.accounts:
        if account.cash < 0 or account.multiplier < 1:
            raise ValueError(f"account {account.label}: cash >= 0 and multiplier >= 1 required")


ConfigSource = str | Path | Mapping[str, Any] | Sequence[Mapping[str, Any]] | SimConfig | None


def load_config(source: ConfigSource = None) -> SimConfig:
    """Read a config from a JSON/YAML path, a dict or account list, or pass a SimConfig through."""
    if source is None:
        return SimConfig()
    if isinstance(source, SimConfig):
        validate(source)
        return source
    if not isinstance(source, (str, Path)):
        return config_from_mapping(source)  # a dict or a list of accounts
    path = Path(source)
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml  # PyYAML: only needed for YAML configs

        return config_from_mapping(yaml.safe_load(text) or {})
    return config_from_mapping(json.loads(text))


def config_to_mapping(cfg: SimConfig) -> dict[str, Any]:
    """The JSON form of a config (what ``load_config`` reads back), e.g. for a subprocess."""
    return {
        "accounts": [
            {
                "label": a.label,
                "key": a.key,
                "secret": a.secret,
                "cash": str(a.cash),
                "shorting_allowed": a.shorting_allowed,
                "multiplier": str(a.multiplier),
                "rate_limit_per_minute": a.rate_limit_per_minute,
                "partial_fill_prob": a.partial_fill_prob,
            }
            for a in cfg.accounts
        ],
        "default_assets": False,
        "assets": [
            {
                "symbol": a.symbol,
                "class": a.asset_class,
                "exchange": a.exchange,
                "name": a.name,
                "shortable": a.shortable,
                "fractionable": a.fractionable,
                "marginable": a.marginable,
                "easy_to_borrow": a.easy_to_borrow,
            }
            for a in cfg.assets
        ],
        "prices": {s: str(p) for s, p in cfg.prices.items()},
        "seed": cfg.seed,
        "partial_fill_prob": cfg.partial_fill_prob,
        "max_partial_fills": cfg.max_partial_fills,
        "crypto_fee_rate": str(cfg.crypto_fee_rate),
        "rate_limit_per_minute": cfg.rate_limit_per_minute,
        "rate_limit_window_s": cfg.rate_limit_window_s,
        "fill_delay_ms": cfg.fill_delay_ms,
        "manual_clock": cfg.manual_clock,
        "start_time": None if cfg.start_time is None else cfg.start_time.isoformat(),
        "ws_binary_frames": cfg.ws_binary_frames,
        "hang_max_s": cfg.hang_max_s,
        "reorder_hold_ms": cfg.reorder_hold_ms,
        "event_log_size": cfg.event_log_size,
    }
