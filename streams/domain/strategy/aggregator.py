"""IntentAggregator: one deterministic intent per (symbol, horizon) out of many strategies' intents.

Rule (as the reference runtime): rank by (-confidence, -notional, strategy_id); the net exposure
sum(confidence * +/-notional) decides the side (> 0 buy, < 0 sell, exactly 0: the top-ranked side).
The winners are the intents on that side: their mean confidence (4 dp), their summed notional and
their ids only; the top-ranked winner names the decision. A group with both sides is a conflict.
Exact decimal arithmetic keeps the result independent of float rounding order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from schemas.decision import Action
from streams.domain.strategy.model import AggregatedIntent, Intent

_CONFIDENCE_QUANTUM = Decimal("0.0001")


@dataclass(frozen=True)
class Aggregation:
    intents: tuple[AggregatedIntent, ...]
    conflicts: int


_NOTHING = Aggregation((), 0)


def rank_key(intent: Intent) -> tuple[float, Decimal, str]:
    return (-intent.confidence, -intent.notional, intent.strategy_id)


def _signed_weight(intent: Intent) -> Decimal:
    weight = Decimal(repr(intent.confidence)) * intent.notional
    return weight if intent.action is Action.buy else -weight


def resolve_group(intents: Sequence[Intent]) -> AggregatedIntent:
    ranked = sorted(intents, key=rank_key)
    net = sum((_signed_weight(i) for i in ranked), Decimal(0))
    if net > 0:
        action = Action.buy
    elif net < 0:
        action = Action.sell
    else:
        action = ranked[0].action
    winners = [i for i in ranked if i.action is action]
    mean = sum((Decimal(repr(w.confidence)) for w in winners), Decimal(0)) / len(winners)
    top = winners[0]
    return AggregatedIntent(
        symbol=top.symbol,
        horizon=top.horizon,
        action=action,
        confidence=float(mean.quantize(_CONFIDENCE_QUANTUM, rounding=ROUND_HALF_EVEN)),
        notional=sum((w.notional for w in winners), Decimal(0)),
        strategy_id=top.strategy_id,
        source_strategy_ids=tuple(w.strategy_id for w in winners),
        event_ts=top.event_ts,
        max_position_pct_equity=min(w.max_position_pct_equity for w in winners),
        conflict=len({i.action for i in ranked}) > 1,
        reason=top.reason,
    )


class IntentAggregator:
    def aggregate(self, intents: Sequence[Intent]) -> Aggregation:
        if not intents:
            return _NOTHING
        groups: dict[tuple[str, str], list[Intent]] = defaultdict(list)
        for intent in intents:
            groups[(intent.symbol, intent.horizon)].append(intent)
        resolved = tuple(resolve_group(groups[key]) for key in sorted(groups))
        return Aggregation(resolved, conflicts=sum(1 for r in resolved if r.conflict))
