"""Monotonic order-state rules and the event fingerprint."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.order_state import (
    STATUS_RANK,
    TERMINAL_STATUSES,
    OrderState,
    event_fingerprint,
    is_advance,
    merge,
)

T0 = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def state(status: str, filled: str = "0", avg: str | None = None, dt: int = 0) -> OrderState:
    return OrderState(
        status=status,
        filled_qty=Decimal(filled),
        filled_avg_price=Decimal(avg) if avg else None,
        event_ts=T0 + timedelta(seconds=dt),
    )


def test_stale_event_does_not_regress_a_filled_execution() -> None:
    filled = state("filled", "10", "101.5", dt=5)
    for stale in (state("partially_filled", "4", "101", dt=3), state("new", dt=1)):
        assert not is_advance(filled, stale)
        assert merge(filled, stale) == filled


def test_terminal_stays_terminal_even_with_a_newer_event() -> None:
    canceled = state("canceled", "3", "100", dt=1)
    assert merge(canceled, state("partially_filled", "5", "100", dt=9)) == canceled


def test_fill_only_grows() -> None:
    partial = state("partially_filled", "6", "100", dt=2)
    assert not is_advance(partial, state("partially_filled", "4", "100", dt=3))
    grown = merge(partial, state("partially_filled", "8", "100.5", dt=4))
    assert grown.filled_qty == Decimal(8)
    assert grown.filled_avg_price == Decimal("100.5")


def test_status_advances_in_rank_only() -> None:
    new = state("new", dt=2)
    assert not is_advance(new, state("pending_new", dt=3))
    assert merge(new, state("accepted", dt=3)) == new
    assert merge(new, state("canceled", dt=3)).status == "canceled"


def test_late_fill_keeps_pending_cancel_but_takes_the_fill() -> None:
    pending_cancel = state("pending_cancel", "2", "100", dt=5)
    merged = merge(pending_cancel, state("partially_filled", "4", "99", dt=4))
    assert merged.status == "pending_cancel"
    assert merged.filled_qty == Decimal(4)
    assert merged.filled_avg_price == Decimal(99)
    assert merged.event_ts == T0 + timedelta(seconds=5)


def test_unknown_status_never_overwrites_a_known_one() -> None:
    assert not is_advance(state("new"), state("restated"))


def test_every_terminal_status_outranks_every_other() -> None:
    top = min(STATUS_RANK[s] for s in TERMINAL_STATUSES)
    assert all(rank < top for s, rank in STATUS_RANK.items() if s not in TERMINAL_STATUSES)


statuses = st.sampled_from(sorted(STATUS_RANK))
states = st.builds(
    OrderState,
    status=statuses,
    filled_qty=st.integers(0, 20).map(Decimal),
    filled_avg_price=st.none() | st.integers(90, 110).map(Decimal),
    event_ts=st.integers(0, 100).map(lambda s: T0 + timedelta(seconds=s)),
)


@given(st.lists(states, min_size=1, max_size=12))
def test_any_order_of_events_never_moves_backwards(events: list[OrderState]) -> None:
    current = events[0]
    for event in events[1:]:
        nxt = merge(current, event)
        assert nxt.filled_qty >= current.filled_qty
        if current.status in TERMINAL_STATUSES:
            assert nxt == current
        assert STATUS_RANK[nxt.status] >= STATUS_RANK[current.status]
        current = nxt


def fp(**overrides: object) -> str:
    fields: dict[str, object] = {
        "account_label": "paper",
        "order_id": "o-1",
        "client_order_id": "c-1",
        "event": "fill",
        "status": "filled",
        "event_ts": T0,
        "execution_id": "x-1",
        "qty": Decimal(4),
        "filled_qty": Decimal(10),
        "filled_avg_price": Decimal("101.5"),
    }
    fields.update(overrides)
    return event_fingerprint(**fields)  # type: ignore[arg-type]


def test_fingerprint_ignores_decimal_spelling_and_timezone() -> None:
    same = fp(
        qty=Decimal("4.000"),
        filled_qty=Decimal("10.0"),
        filled_avg_price=Decimal("101.50"),
        event_ts=T0.astimezone(datetime.now().astimezone().tzinfo),
    )
    assert same == fp()


def test_fingerprint_is_account_scoped_and_covers_every_field() -> None:
    base = fp()
    variants = [
        fp(account_label="live"),
        fp(order_id="o-2"),
        fp(client_order_id="c-2"),
        fp(event="partial_fill"),
        fp(status="partially_filled"),
        fp(event_ts=T0 + timedelta(microseconds=1)),
        fp(execution_id="x-2"),
        fp(qty=Decimal(5)),
        fp(filled_qty=Decimal(11)),
        fp(filled_avg_price=Decimal(102)),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_the_repository_sql_uses_the_same_ranks() -> None:
    from streams.persistence.status import EXECUTION_RANKS, EXECUTION_TERMINAL

    assert dict(EXECUTION_RANKS) == STATUS_RANK
    assert EXECUTION_TERMINAL == TERMINAL_STATUSES


def test_higher_status_with_older_fill_keeps_the_larger_fill() -> None:
    partial = state("partially_filled", "5", "100", dt=5)
    merged = merge(partial, state("pending_cancel", "3", "99", dt=4))
    assert (merged.status, merged.filled_qty, merged.filled_avg_price) == (
        "pending_cancel",
        Decimal(5),
        Decimal(100),
    )


_UNIQUE_RANK = sorted(
    s
    for s, r in STATUS_RANK.items()
    if s not in TERMINAL_STATUSES and list(STATUS_RANK.values()).count(r) == 1
)


@given(
    st.lists(st.tuples(st.sampled_from(_UNIQUE_RANK), st.integers(0, 20)), min_size=2, max_size=8),
    st.randoms(),
)
def test_fold_of_non_terminal_events_does_not_depend_on_arrival_order(
    events: list[tuple[str, int]], rnd: object
) -> None:
    import random

    assert isinstance(rnd, random.Random)
    states_ = [
        OrderState(s, Decimal(f), Decimal(100 + f), T0 + timedelta(seconds=f)) for s, f in events
    ]
    shuffled = list(states_)
    rnd.shuffle(shuffled)

    def fold(seq: list[OrderState]) -> OrderState:
        acc = OrderState("pending_new")
        for s in seq:
            acc = merge(acc, s)
        return acc

    a, b = fold(states_), fold(shuffled)
    assert (a.status, a.filled_qty) == (b.status, b.filled_qty)
