"""B0 and B6's pure parts: the decisions comparison, the floor's order and latencies, the goals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from bench.b0_floor import order_latencies, outcomes
from bench.b6_peers import per_cpu, run_span_seconds, signals_per_second
from bench.context import QUICK
from bench.goals import (
    B6_PER_CPU_AIOKAFKA,
    B6_PER_CPU_QUIX,
    floor_ratio_metric,
    goals,
    keep_up_metric,
)
from bench.io_floor import order_body
from bench.peers.compare import canonical, compare
from bench.report import BenchResult
from bench.support import Seen
from schemas.codecs import DecodeError, encode_decision
from schemas.decision import AccountDecision
from streams.domain.hashing import decision_hash

EVENT = datetime(2026, 3, 2, 14, 30, 0, 125000, tzinfo=UTC)


def decision(account: str = "a000", symbol: str = "BN0001", **changes: Any) -> AccountDecision:
    identity: dict[str, Any] = {
        "account_label": account,
        "symbol": symbol,
        "timeframe": "1Sec",
        "event_ts": EVENT,
        "action": "buy",
    }
    fields: dict[str, Any] = {
        **identity,
        "strategy_id": "legacy-macd-rsi",
        "notional": Decimal("1000"),
        "confidence": 0.7,
        "price": Decimal("130"),
        "signal_seq": 4,
        "emitted_at": datetime(2026, 3, 2, 14, 30, 1, tzinfo=UTC),
    }
    fields.update(changes)
    return AccountDecision.model_validate({**fields, "decision_hash": decision_hash(**identity)})


def record(d: AccountDecision, key: str | None = None) -> str:
    return canonical((key or d.account_label).encode(), encode_decision(d))


# ---------------------------------------------------------------- B6: decisions compared


def test_the_same_decisions_emitted_at_other_times_are_equal() -> None:
    a = [record(decision("a000")), record(decision("a001"))]
    later = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
    b = [record(decision("a001", emitted_at=later)), record(decision("a000", emitted_at=later))]
    result = compare("worker", {"worker": a, "quix": b})
    assert result.equal
    assert result.digests["worker"] == result.digests["quix"]
    assert result.as_dict()["decisions"] == {"worker": 2, "quix": 2}


def test_a_missing_a_duplicated_and_a_changed_decision_are_each_reported() -> None:
    base = [record(decision("a000")), record(decision("a001"))]
    outputs = {
        "worker": base,
        "missing": base[:1],
        "duplicate": [*base, base[0]],
        "changed": [base[0], record(decision("a001", notional=Decimal("999")))],
        "rekeyed": [base[0], record(decision("a001"), key="a000")],
    }
    result = compare("worker", outputs)
    assert not result.equal
    diff = result.as_dict()["differences"]
    assert diff["missing"] == {"missing": 1, "extra": 0}
    assert diff["duplicate"] == {"missing": 0, "extra": 1}
    assert diff["changed"] == {"missing": 1, "extra": 1}
    assert diff["rekeyed"] == {"missing": 1, "extra": 1}
    assert "missing: 1 missing, 0 extra vs worker" in result.describe()
    assert len(set(result.digests.values())) == 5


def test_a_decision_whose_hash_does_not_match_its_content_fails_the_comparison() -> None:
    forged = json.loads(encode_decision(decision()))
    forged["symbol"] = "BN0002"  # the hash still covers BN0001
    with pytest.raises(DecodeError):
        canonical(b"a000", json.dumps(forged).encode())


def test_the_reference_must_be_a_contender() -> None:
    with pytest.raises(ValueError, match="reference"):
        compare("worker", {"quix": []})


def test_signals_per_cpu_ratio_is_the_inverse_ratio_of_cpu_per_signal() -> None:
    figures = {"worker": {"cpu_us_per_signal": 120.0}, "quix": {"cpu_us_per_signal": 36.0}}
    assert per_cpu(figures, "worker", "quix") == pytest.approx(0.3)
    assert per_cpu({"worker": {}, "quix": {"cpu_us_per_signal": 1.0}}, "quix", "worker") is None


def _out(*stamps_ms: int) -> list[Seen]:
    return [Seen(b"a", b"v", stamp, partition=i % 4) for i, stamp in enumerate(stamps_ms)]


def test_a_peer_reading_partitions_in_runs_gets_its_runs_span_not_first_to_last_signal() -> None:
    # Quix Streams: the backlog's last signal (another partition) handled 1 ms after its first;
    # the run itself took 2 s. B2's first-signal→last-signal span gave 30,000,000 signals/s.
    out = _out(1_000, 1_001, 1_500, 3_000, 2_200)
    assert run_span_seconds(out) == pytest.approx(2.0)
    assert signals_per_second(30_000, run_span_seconds(out)) == pytest.approx(14_999.5)


def test_no_rate_without_a_span() -> None:
    assert run_span_seconds([]) is None
    assert run_span_seconds(_out(5, 5, 5)) is None
    assert signals_per_second(30_000, None) is None


# ---------------------------------------------------------------- B0: the floor


def test_the_floor_orders_whole_shares_of_the_notional_and_uses_the_hash_as_client_id() -> None:
    d = decision(notional=Decimal("1000"), price=Decimal("130"))
    body = order_body(d)
    assert body == {
        "symbol": "BN0001",
        "qty": "7",
        "side": "buy",
        "type": "market",
        "time_in_force": "day",
        "client_order_id": d.decision_hash,
    }
    assert order_body(decision(notional=Decimal("10"), price=Decimal("130")))["qty"] == "1"


def test_outcomes_skip_the_journal_records_and_keep_the_first_outcome() -> None:
    journal = encode_decision(decision())
    first = {"account": "a000", "client_order_id": "h", "status": 200, "acked_at": 2.0}
    again = {**first, "acked_at": 9.0}
    found = outcomes([(b"k", journal), (b"k", json.dumps(first).encode()), (b"k", None)])
    found_again = outcomes([(b"k", json.dumps(first).encode()), (b"k", json.dumps(again).encode())])
    assert list(found) == [("a000", "h")]
    assert found_again[("a000", "h")]["acked_at"] == 2.0


def test_floor_latency_counts_an_unanswered_or_failed_order_with_its_age() -> None:
    orders = {("a000", "h1"): 100.0, ("a001", "h2"): 100.0, ("a002", "h3"): 100.0}
    done = {
        ("a000", "h1"): {
            "status": 200,
            "received_at": 100.010,
            "journaled_at": 100.015,
            "acked_at": 100.025,
        },
        ("a001", "h2"): {
            "status": 500,
            "received_at": 100.0,
            "journaled_at": 100.0,
            "acked_at": 100.0,
        },
    }
    ack_ms, steps, unacked = order_latencies(orders, done, now=101.0)
    assert unacked == 2
    assert ack_ms == pytest.approx([25.0, 1000.0, 1000.0])
    assert steps["queued"] == pytest.approx([10.0])
    assert steps["durable write"] == pytest.approx([5.0])
    assert steps["broker POST"] == pytest.approx([10.0])


# ---------------------------------------------------------------- goals


def results(b3: dict[str, float], b6: dict[str, float]) -> list[BenchResult]:
    out = []
    for key, metrics in (("B3", b3), ("B6", b6)):
        result = BenchResult(key, key)
        for name, value in metrics.items():
            result.add(name, value)
        out.append(result)
    return out


def test_g1_is_the_worker_per_cpu_against_quix_and_the_stretch_against_aiokafka() -> None:
    found = {
        g.name: g
        for g in goals(QUICK, results({}, {B6_PER_CPU_QUIX: 1.1, B6_PER_CPU_AIOKAFKA: 0.4}))
    }
    assert found["G1 pipeline"].met is True
    assert found["G1 pipeline"].threshold == 1.0
    assert found["G1 stretch"].met is False
    assert found["G1 stretch"].threshold == 0.5


def test_g2_is_b3_over_the_floor_per_rate_and_the_backlog_at_2000() -> None:
    b3 = {floor_ratio_metric(500): 1.9, floor_ratio_metric(2000): 4.5, keep_up_metric(2000): 0.97}
    found = {g.name: g for g in goals(QUICK, results(b3, {}))}
    assert found["G2 latency @500/s"].met is True
    assert found["G2 latency @2000/s"].met is False
    assert found["G2 latency @2000/s"].threshold == 4.0
    assert found["G2 backlog @2000/s"].met is True


def test_goals_not_measured_are_not_verdicts() -> None:
    found = {g.name: g for g in goals(QUICK, results({}, {}))}
    assert found["G1 pipeline"].met is None
    assert found["G2 latency @500/s"].met is None
