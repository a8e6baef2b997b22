from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from schemas.decision import Action
from streams.domain.strategy.aggregator import IntentAggregator
from streams.domain.strategy.model import Intent
from tests.unit.strategy.fixtures import T0


def intent(
    sid: str,
    action: Action,
    confidence: float,
    notional: str,
    symbol: str = "AAPL",
    horizon: str = "1Sec",
    pct: float = 0.25,
) -> Intent:
    return Intent(sid, symbol, horizon, action, confidence, Decimal(notional), T0, pct)


def test_confident_buyer_beats_a_larger_but_doubtful_seller() -> None:
    """buy 0.9 x 100 = 90 against sell 0.4 x 200 = 80: buy, sourced from the buyer only."""
    result = IntentAggregator().aggregate(
        [intent("seller", Action.sell, 0.4, "200"), intent("buyer", Action.buy, 0.9, "100")]
    )
    assert result.conflicts == 1
    (resolved,) = result.intents
    assert resolved.action is Action.buy
    assert resolved.strategy_id == "buyer"
    assert resolved.source_strategy_ids == ("buyer",)
    assert resolved.notional == Decimal("100")
    assert resolved.confidence == 0.9
    assert resolved.conflict


def test_winners_share_mean_confidence_and_summed_notional() -> None:
    result = IntentAggregator().aggregate(
        [
            intent("b", Action.buy, 0.6, "100"),
            intent("a", Action.buy, 0.7, "50"),
            intent("c", Action.buy, 0.55555, "10"),
        ]
    )
    (resolved,) = result.intents
    assert result.conflicts == 0
    assert resolved.strategy_id == "a"  # ranked by confidence first
    assert resolved.source_strategy_ids == ("a", "b", "c")
    assert resolved.notional == Decimal("160")
    assert resolved.confidence == 0.6185  # mean 0.618516.. to 4 dp
    assert not resolved.conflict


def test_exact_tie_goes_to_the_top_ranked_side() -> None:
    """0.5 x 200 buy against 0.5 x 200 sell: equal confidence and notional, id breaks the tie."""
    result = IntentAggregator().aggregate(
        [intent("zeta", Action.buy, 0.5, "200"), intent("alpha", Action.sell, 0.5, "200")]
    )
    (resolved,) = result.intents
    assert resolved.action is Action.sell
    assert resolved.source_strategy_ids == ("alpha",)


def test_rank_uses_notional_after_confidence() -> None:
    result = IntentAggregator().aggregate(
        [intent("a", Action.buy, 0.5, "100"), intent("b", Action.buy, 0.5, "300")]
    )
    assert result.intents[0].strategy_id == "b"


def test_groups_by_symbol_and_horizon_in_sorted_order() -> None:
    result = IntentAggregator().aggregate(
        [
            intent("s1", Action.buy, 0.5, "100", symbol="MSFT"),
            intent("s1", Action.sell, 0.5, "100", symbol="AAPL", horizon="1Min"),
            intent("s2", Action.buy, 0.5, "100", symbol="AAPL", horizon="1Sec"),
        ]
    )
    keys = [(i.symbol, i.horizon) for i in result.intents]
    assert keys == [("AAPL", "1Min"), ("AAPL", "1Sec"), ("MSFT", "1Sec")]
    assert result.conflicts == 0


def test_most_conservative_position_cap_wins() -> None:
    result = IntentAggregator().aggregate(
        [intent("a", Action.buy, 0.8, "100", pct=0.3), intent("b", Action.buy, 0.6, "100", pct=0.1)]
    )
    assert result.intents[0].max_position_pct_equity == 0.1


_intents = st.lists(
    st.builds(
        intent,
        sid=st.sampled_from(["a", "b", "c", "d", "e"]),
        action=st.sampled_from([Action.buy, Action.sell]),
        confidence=st.sampled_from([0.1, 0.35, 0.5, 0.9, 1.0]),
        notional=st.sampled_from(["10", "100", "250.50"]),
        symbol=st.sampled_from(["AAPL", "MSFT"]),
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda i: (i.strategy_id, i.symbol),
)


@given(_intents, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_input_order(intents: list[Intent], rnd: object) -> None:
    shuffled = list(intents)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    aggregator = IntentAggregator()
    assert aggregator.aggregate(intents) == aggregator.aggregate(shuffled)
