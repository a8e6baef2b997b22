"""Order sizing: from a decision's notional and the account snapshot to an order plan (pure).

- Equities trade whole shares (rounded down): every Alpaca asset and TIF accepts them, and a
  short sell can never be fractional. Crypto trades 6 decimals (rounded down).
- TIF: `day` for equities, `gtc` for crypto (Alpaca accepts only gtc/ioc for crypto).
- Crypto symbols are `BTC/USD` in orders and `BTCUSD` in positions: positions are looked up by
  the slash-less form.
- A sell is capped at the long position held unless shorts are allowed (never for crypto).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas.common import Money
from schemas.decision import AccountDecision, Action

CRYPTO_QTY_QUANTUM = Decimal("0.000001")
EQUITY_QTY_QUANTUM = Decimal(1)
ZERO = Decimal(0)


def is_crypto(symbol: str) -> bool:
    """Alpaca crypto pairs carry a slash in orders (`BTC/USD`)."""
    return "/" in symbol


def position_symbol(symbol: str) -> str:
    """The symbol as positions name it (`BTC/USD` → `BTCUSD`)."""
    return symbol.replace("/", "").upper()


class OrderPlan(BaseModel):
    """A sized market order, ready for the broker; `client_order_id` is the decision hash."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_order_id: str
    symbol: str
    side: Action
    qty: Money
    time_in_force: str
    order_type: str = "market"
    price: Money  # reference price used for sizing
    crypto: bool = False

    @property
    def notional(self) -> Decimal:
        return self.qty * self.price


@dataclass(frozen=True)
class Holding:
    qty: Decimal  # signed: < 0 is short
    market_value: Decimal  # signed like qty


@dataclass(frozen=True)
class AccountSnapshot:
    """Equity, buying power and positions of one account at `as_of`."""

    account_label: str
    as_of: datetime
    equity: Decimal
    cash: Decimal
    buying_power: Decimal
    crypto_buying_power: Decimal
    holdings: Mapping[str, Holding] = field(default_factory=dict)
    # When the broker was asked (before `GET /v2/account`): every order the broker had accepted
    # by then is held back in its buying power; an order first seen after may not be.
    requested_at: datetime | None = None

    def holding(self, symbol: str) -> Holding:
        return self.holdings.get(position_symbol(symbol), Holding(ZERO, ZERO))

    def after_order(self, plan: OrderPlan) -> AccountSnapshot:
        """The snapshot as if `plan` had filled at its price: later decisions see it reserved."""
        signed = plan.qty if plan.side is Action.buy else -plan.qty
        held = self.holding(plan.symbol)
        holdings = dict(self.holdings)
        holdings[position_symbol(plan.symbol)] = Holding(
            held.qty + signed, held.market_value + signed * plan.price
        )
        spent = plan.notional if plan.side is Action.buy else ZERO
        return replace(
            self,
            buying_power=self.buying_power - spent,
            crypto_buying_power=self.crypto_buying_power - (spent if plan.crypto else ZERO),
            holdings=holdings,
        )

    @classmethod
    def from_alpaca(
        cls,
        account_label: str,
        account: Mapping[str, Any],
        positions: Iterable[Mapping[str, Any]],
        as_of: datetime,
        requested_at: datetime | None = None,
    ) -> AccountSnapshot:
        """From `GET /v2/account` and `GET /v2/positions` bodies (decimal strings)."""
        buying_power = _dec(account.get("buying_power"))
        holdings = {
            position_symbol(str(p["symbol"])): Holding(
                _dec(p.get("qty")), _dec(p.get("market_value"))
            )
            for p in positions
        }
        return cls(
            account_label=account_label,
            as_of=as_of,
            equity=_dec(account.get("equity")),
            cash=_dec(account.get("cash")),
            buying_power=buying_power,
            crypto_buying_power=_dec(account.get("non_marginable_buying_power"), buying_power),
            holdings=holdings,
            requested_at=requested_at,
        )


def _dec(value: Any, default: Decimal = ZERO) -> Decimal:
    if value is None or value == "":
        return default
    return Decimal(str(value))


@dataclass(frozen=True)
class SizingLimits:
    max_notional_per_order: Decimal
    max_position_pct_equity: Decimal
    allow_shorts: bool = False


@dataclass(frozen=True)
class SizingResult:
    plan: OrderPlan | None = None
    reasons: tuple[str, ...] = ()


def _quantize(qty: Decimal, crypto: bool) -> Decimal:
    quantum = CRYPTO_QTY_QUANTUM if crypto else EQUITY_QTY_QUANTUM
    return qty.quantize(quantum, rounding=ROUND_DOWN)


def _sell_qty(wanted: Decimal, held: Decimal, crypto: bool, allow_shorts: bool) -> Decimal | None:
    """Sell what is wanted, capped at the long position unless shorting is allowed; None = short."""
    if allow_shorts and not crypto:
        return wanted
    if held <= ZERO:
        return None
    return min(wanted, held)


def size_order(
    decision: AccountDecision, snapshot: AccountSnapshot, limits: SizingLimits
) -> SizingResult:
    """The order plan for `decision`, or the reasons it cannot be placed."""
    price = decision.price
    if price is None or price <= ZERO:
        return SizingResult(reasons=("missing_price",))
    reasons: list[str] = []
    if decision.notional > limits.max_notional_per_order:
        reasons.append("max_notional_exceeded")
    crypto = is_crypto(decision.symbol)
    held = snapshot.holding(decision.symbol)
    wanted = _quantize(decision.notional / price, crypto)
    qty: Decimal | None = wanted
    if decision.action is Action.sell:
        qty = _sell_qty(wanted, held.qty, crypto, limits.allow_shorts)
        if qty is None:
            reasons.append("shorts_not_allowed")
    if qty is not None and qty <= ZERO:
        reasons.append("qty_below_minimum")
    if reasons or qty is None:
        return SizingResult(reasons=tuple(reasons))
    plan = OrderPlan(
        client_order_id=decision.decision_hash,
        symbol=decision.symbol,
        side=decision.action,
        qty=qty,
        time_in_force="gtc" if crypto else "day",
        price=price,
        crypto=crypto,
    )
    reasons += _exposure_reasons(decision, plan, snapshot, held, limits)
    if reasons:
        return SizingResult(reasons=tuple(reasons))
    return SizingResult(plan=plan)


def _exposure_reasons(
    decision: AccountDecision,
    plan: OrderPlan,
    snapshot: AccountSnapshot,
    held: Holding,
    limits: SizingLimits,
) -> list[str]:
    reasons: list[str] = []
    if plan.side is Action.buy:
        power = snapshot.crypto_buying_power if plan.crypto else snapshot.buying_power
        if plan.notional > power:
            reasons.append("insufficient_buying_power")
    # A strategy may tighten the operator's cap, never raise it.
    pct = limits.max_position_pct_equity
    if decision.max_position_pct_equity is not None:
        pct = min(pct, Decimal(str(decision.max_position_pct_equity)))
    signed = plan.notional if plan.side is Action.buy else -plan.notional
    exposure_after = abs(held.market_value + signed)
    grows = exposure_after > abs(held.market_value)
    if grows and (snapshot.equity <= ZERO or exposure_after > snapshot.equity * pct):
        reasons.append("max_position_pct_exceeded")
    return reasons
