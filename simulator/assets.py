"""Tradable assets: the default list, symbol normalisation and Alpaca's asset JSON."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from typing import Any

# Fixed namespace so asset and account ids are identical across runs and processes.
SIM_NAMESPACE = uuid.UUID("6f1b8a52-5c2e-4c1e-9a57-7d0c3e1f2a90")

EQUITY = "us_equity"
CRYPTO = "crypto"


@dataclass(frozen=True)
class Asset:
    symbol: str  # order form: "AAPL", "BTC/USD"
    asset_class: str  # "us_equity" or "crypto"
    exchange: str
    name: str = ""
    shortable: bool = True
    fractionable: bool = True
    marginable: bool = True
    easy_to_borrow: bool = True

    @cached_property
    def id(self) -> uuid.UUID:
        return uuid.uuid5(SIM_NAMESPACE, "asset/" + self.symbol)

    @cached_property
    def id_str(self) -> str:
        return str(self.id)

    @property
    def is_crypto(self) -> bool:
        return self.asset_class == CRYPTO

    @property
    def position_symbol(self) -> str:
        """Positions name crypto pairs without the slash ("BTCUSD"), orders with it."""
        return self.symbol.replace("/", "")

    @property
    def base_currency(self) -> str:
        return self.symbol.split("/", 1)[0]

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id_str,
            "class": self.asset_class,
            "exchange": self.exchange,
            "symbol": self.symbol,
            "name": self.name or self.symbol,
            "status": "active",
            "tradable": True,
            "marginable": self.marginable and not self.is_crypto,
            "maintenance_margin_requirement": 100 if self.is_crypto else 30,
            "shortable": self.shortable and not self.is_crypto,
            "easy_to_borrow": self.easy_to_borrow and not self.is_crypto,
            "fractionable": self.fractionable,
            "attributes": [],
        }
        if self.is_crypto:
            body["min_order_size"] = "0.000000002"
            body["min_trade_increment"] = "0.000000001"
            body["price_increment"] = "0.01"
        return body


def _eq(symbol: str, exchange: str, name: str) -> Asset:
    return Asset(symbol=symbol, asset_class=EQUITY, exchange=exchange, name=name)


def _cx(symbol: str, name: str) -> Asset:
    return Asset(
        symbol=symbol,
        asset_class=CRYPTO,
        exchange="CRYPTO",
        name=name,
        shortable=False,
        marginable=False,
        easy_to_borrow=False,
    )


DEFAULT_ASSETS: tuple[Asset, ...] = (
    _eq("AAPL", "NASDAQ", "Apple Inc. Common Stock"),
    _eq("MSFT", "NASDAQ", "Microsoft Corporation Common Stock"),
    _eq("NVDA", "NASDAQ", "NVIDIA Corporation Common Stock"),
    _eq("SPY", "ARCA", "SPDR S&P 500 ETF Trust"),
    _eq("TSLA", "NASDAQ", "Tesla, Inc. Common Stock"),
    _eq("AMD", "NASDAQ", "Advanced Micro Devices, Inc. Common Stock"),
    _eq("META", "NASDAQ", "Meta Platforms, Inc. Class A Common Stock"),
    _eq("GOOGL", "NASDAQ", "Alphabet Inc. Class A Common Stock"),
    _eq("AMZN", "NASDAQ", "Amazon.com, Inc. Common Stock"),
    _cx("BTC/USD", "Bitcoin / US Dollar"),
    _cx("ETH/USD", "Ethereum / US Dollar"),
    _cx("SOL/USD", "Solana / US Dollar"),
)

DEFAULT_PRICES: dict[str, Decimal] = {
    "AAPL": Decimal("190.00"),
    "MSFT": Decimal("420.00"),
    "NVDA": Decimal("120.00"),
    "SPY": Decimal("550.00"),
    "TSLA": Decimal("250.00"),
    "AMD": Decimal("160.00"),
    "META": Decimal("500.00"),
    "GOOGL": Decimal("170.00"),
    "AMZN": Decimal("185.00"),
    "BTC/USD": Decimal("60000.00"),
    "ETH/USD": Decimal("3000.00"),
    "SOL/USD": Decimal("150.00"),
}


class AssetBook:
    """Symbol lookup by order symbol, position symbol ("BTCUSD") or asset id, all O(1)."""

    def __init__(self, assets: Iterable[Asset]) -> None:
        self._by_symbol: dict[str, Asset] = {}
        self._by_key: dict[str, Asset] = {}
        for asset in assets:
            self._by_symbol[asset.symbol] = asset
            self._by_key[asset.symbol] = asset
            self._by_key[asset.position_symbol] = asset
            self._by_key[asset.id_str] = asset

    def __iter__(self) -> Iterator[Asset]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def find(self, symbol_or_id: str) -> Asset | None:
        key = symbol_or_id.strip()
        return self._by_key.get(key.upper()) or self._by_key.get(key.lower())

    def symbols(self) -> list[str]:
        return list(self._by_symbol)


def asset_from_mapping(raw: Mapping[str, Any]) -> Asset:
    """Build an asset from config; ``class`` defaults to crypto for "X/Y" symbols."""
    symbol = str(raw["symbol"]).upper()
    asset_class = str(raw.get("class", raw.get("asset_class", CRYPTO if "/" in symbol else EQUITY)))
    if asset_class not in (EQUITY, CRYPTO):
        raise ValueError(f"asset {symbol}: class must be {EQUITY} or {CRYPTO}")
    is_crypto = asset_class == CRYPTO
    if is_crypto and "/" not in symbol:
        raise ValueError(f"crypto asset {symbol} must be written as a pair, e.g. BTC/USD")
    return Asset(
        symbol=symbol,
        asset_class=asset_class,
        exchange=str(raw.get("exchange", "CRYPTO" if is_crypto else "NASDAQ")),
        name=str(raw.get("name", "")),
        shortable=bool(raw.get("shortable", not is_crypto)),
        fractionable=bool(raw.get("fractionable", True)),
        marginable=bool(raw.get("marginable", not is_crypto)),
        easy_to_borrow=bool(raw.get("easy_to_borrow", not is_crypto)),
    )
