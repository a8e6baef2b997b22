"""Pure rules of the persistence adapter: ranks, DSN forms, batch dedupe, JSON encoding."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.persistence.dsn import asyncpg_dsn, sqlalchemy_url
from streams.persistence.models import metadata
from streams.persistence.repository import _dedupe_decisions, _most_advanced, dumps
from streams.persistence.rows import DecisionRow
from streams.persistence.status import (
    DECISION_RANKS,
    EXECUTION_RANKS,
    EXECUTION_TERMINAL,
    TERMINAL,
    decision_status_for,
    execution_rank,
    is_terminal_execution,
    rank_sql,
)

T0 = datetime(2026, 2, 23, tzinfo=UTC)


def test_terminal_statuses_outrank_everything_and_unknown_ranks_lowest() -> None:
    assert {"filled", "canceled", "expired", "rejected", "replaced"} == EXECUTION_TERMINAL
    assert all(
        EXECUTION_RANKS[s] < TERMINAL for s in EXECUTION_RANKS if s not in EXECUTION_TERMINAL
    )
    assert execution_rank("new") < execution_rank("partially_filled") < execution_rank("filled")
    assert execution_rank("something_new_from_alpaca") == 0
    assert is_terminal_execution("expired") and not is_terminal_execution("pending_cancel")


@pytest.mark.parametrize(
    ("execution_status", "decision_status"),
    [
        ("pending_new", "submitted"),
        ("new", "submitted"),
        ("partially_filled", "partially_filled"),
        ("filled", "filled"),
        ("canceled", "canceled"),
        ("submitting", "submitting"),
    ],
)
def test_decision_mirrors_the_execution(execution_status: str, decision_status: str) -> None:
    assert decision_status_for(execution_status) == decision_status
    assert decision_status in DECISION_RANKS


def test_rank_sql_renders_every_status_once() -> None:
    sql = rank_sql("e.status", EXECUTION_RANKS)
    assert sql.startswith("(CASE e.status WHEN") and sql.endswith("ELSE 0 END)")
    for status, rank in EXECUTION_RANKS.items():
        assert sql.count(f"WHEN '{status}' THEN {rank} ") == 1


@pytest.mark.parametrize(
    "dsn", ["postgresql://u:p@h:5/db", "postgres://u:p@h:5/db", "postgresql+asyncpg://u:p@h:5/db"]
)
def test_dsn_forms(dsn: str) -> None:
    assert asyncpg_dsn(dsn) == "postgresql://u:p@h:5/db"
    assert sqlalchemy_url(dsn) == "postgresql+asyncpg://u:p@h:5/db"


def test_a_bad_dsn_is_refused_without_echoing_it() -> None:
    with pytest.raises(ValueError) as err:
        asyncpg_dsn("mysql://user:secret@h/db")
    assert "secret" not in str(err.value)


def decision(status: str, account: str = "paper") -> DecisionRow:
    return DecisionRow(account, "h" * 64, "s", "AAPL", "1Sec", "buy", T0, status=status)


def test_batch_dedupe_keeps_the_most_advanced_copy_per_account() -> None:
    rows = [decision("planned"), decision("rejected"), decision("submitting"), decision("x", "b")]
    kept = _dedupe_decisions(rows)
    assert [(r.account_label, r.status) for r in kept] == [("paper", "rejected"), ("b", "x")]


def test_most_advanced_event_prefers_rank_then_fill_then_time() -> None:
    events: list[dict[str, object]] = [
        {"status": "partially_filled", "filled_qty": Decimal(5), "event_ts": T0},
        {"status": "partially_filled", "filled_qty": Decimal(7), "event_ts": T0},
        {"status": "new", "filled_qty": Decimal(0), "event_ts": T0},
        {"status": None, "filled_qty": Decimal(9), "event_ts": T0},
    ]
    assert _most_advanced(events) == events[1]
    assert _most_advanced([]) is None


def test_json_keeps_decimals_exact() -> None:
    assert dumps({"q": Decimal("0.10000001"), "t": T0, "s": ("a",)}) == (
        '{"q":"0.10000001","t":"2026-02-23T00:00:00+00:00","s":["a"]}'
    )


def test_models_declare_the_account_scoped_uniques() -> None:
    uniques = {
        (table.name, tuple(c.name for c in index.columns))
        for table in metadata.tables.values()
        for index in table.indexes
        if index.unique
    }
    assert ("trade_decisions", ("alpaca_account_label", "decision_hash")) in uniques
    assert ("executions", ("alpaca_account_label", "client_order_id")) in uniques
    assert ("executions", ("alpaca_account_label", "alpaca_order_id")) in uniques
    assert ("trade_cursor", ("source", "account_label")) in uniques
    assert not {("executions", ("client_order_id",)), ("trade_cursor", ("source",))} & uniques
    assert "divergence_bps" in metadata.tables["execution_tca_metrics"].columns
