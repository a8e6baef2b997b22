"""TA freshness: per-class verdicts, fail-safe ageing, order blocking, the status view."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from streams.domain.freshness import FreshnessState, SymbolClass, evaluate, symbol_class

NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)


def state(block: bool = False) -> FreshnessState:
    s = FreshnessState()
    s.configure(enabled=True, slo_seconds=120, block_orders=block)
    return s


def test_symbol_class_is_crypto_when_the_symbol_has_a_slash() -> None:
    assert symbol_class("BTC/USD") is SymbolClass.crypto
    assert symbol_class("AAPL") is SymbolClass.equity


def test_evaluate_marks_old_and_missing_classes_stale() -> None:
    verdicts = evaluate({SymbolClass.crypto: NOW - timedelta(seconds=30)}, NOW, 120)
    assert not verdicts[SymbolClass.crypto].stale
    assert verdicts[SymbolClass.crypto].age_seconds == 30
    assert verdicts[SymbolClass.equity].stale and verdicts[SymbolClass.equity].age_seconds is None


def test_disabled_check_never_reports_stale() -> None:
    s = FreshnessState()
    s.configure(enabled=False, slo_seconds=120, block_orders=True)
    assert not s.is_stale("AAPL", NOW) and not s.blocks_orders("AAPL", NOW)


def test_stale_until_first_observation_then_ages_without_refresh() -> None:
    s = state(block=True)
    assert s.is_stale("AAPL", NOW)  # nothing observed yet: fail safe
    s.record({SymbolClass.equity: NOW, SymbolClass.crypto: NOW}, NOW)
    assert not s.blocks_orders("AAPL", NOW + timedelta(seconds=119))
    s.record_error("ClickHouseError: down")  # the checker fails from now on
    assert s.blocks_orders("AAPL", NOW + timedelta(seconds=121))
    assert s.snapshot(NOW)["error"] == "ClickHouseError: down"


def test_blocking_is_per_class_and_only_when_configured() -> None:
    s = state(block=True)
    s.record({SymbolClass.crypto: NOW, SymbolClass.equity: NOW - timedelta(hours=1)}, NOW)
    assert s.blocks_orders("MSFT", NOW) and not s.blocks_orders("ETH/USD", NOW)
    s.configure(enabled=True, slo_seconds=120, block_orders=False)
    assert s.is_stale("MSFT", NOW) and not s.blocks_orders("MSFT", NOW)


def test_latest_never_goes_backwards() -> None:
    s = state()
    s.record({SymbolClass.equity: NOW}, NOW)
    s.record({SymbolClass.equity: None}, NOW + timedelta(minutes=30))  # outside the horizon now
    assert s.classes(NOW)[SymbolClass.equity].latest_event_ts == NOW


def test_snapshot_is_json_and_says_what_is_stale() -> None:
    s = state()
    s.record({SymbolClass.crypto: NOW}, NOW, {SymbolClass.crypto: 3})
    snap = json.loads(json.dumps(s.snapshot(NOW + timedelta(seconds=5))))
    assert snap["stale"] is True
    assert snap["classes"]["crypto"] == {
        "latest_event_ts": "2026-03-02T15:00:00.000Z",
        "age_seconds": 5.0,
        "stale": False,
        "fresh_symbols": 3,
    }
    assert snap["classes"]["equity"]["stale"] is True
