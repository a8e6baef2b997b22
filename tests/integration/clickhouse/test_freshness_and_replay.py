"""TA freshness from ClickHouse, and replay reads, against the embedded engine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY

from streams.clickhouse.client import ClickHouse, open_clickhouse
from streams.clickhouse.freshness import refresh_freshness
from streams.clickhouse.queries import RangeQuery
from streams.clickhouse.replay import run_replay
from streams.domain.freshness import FreshnessState
from streams.domain.replay import ReplayScope, replay_scope_from_headers
from tests.integration.clickhouse.helpers import ListPublisher, insert, key_of, ta

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 14, 30, 0, 250000, tzinfo=UTC)


def gauge(name: str, cls: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"class": cls})


async def test_freshness_turns_stale_and_fresh_again(ch: ClickHouse) -> None:
    state = FreshnessState()
    state.configure(enabled=True, slo_seconds=60, block_orders=True)
    now = datetime.now(UTC)
    await insert(ch, [ta("AAPL", now - timedelta(seconds=300), 1)])
    await insert(ch, [ta("BTC/USD", now - timedelta(seconds=5), 1)])

    await refresh_freshness(ch, state, now)
    assert state.blocks_orders("MSFT", now) and not state.blocks_orders("ETH/USD", now)
    assert gauge("torghut_ta_stale", "equity") == 1.0
    assert gauge("torghut_ta_stale", "crypto") == 0.0
    assert gauge("torghut_ta_freshness_seconds", "equity") == pytest.approx(300, abs=1)
    assert state.snapshot(now)["classes"]["crypto"]["fresh_symbols"] == 1

    await insert(ch, [ta("AAPL", now - timedelta(seconds=1), 2)])
    await refresh_freshness(ch, state, now)
    assert not state.is_stale("MSFT", now) and not state.blocks_orders("MSFT", now)
    assert gauge("torghut_ta_stale", "equity") == 0.0

    # The check fails from now on (no such table): the last observation ages into stale.
    broken = open_clickhouse(f"chdb://{ch.target.path}?database=no_such_db")
    later = now + timedelta(seconds=90)
    await refresh_freshness(broken, state, later)
    assert state.error is not None and "no_such_db" in state.error
    assert state.blocks_orders("AAPL", later) and state.blocks_orders("BTC/USD", later)
    assert gauge("torghut_ta_stale", "crypto") == 1.0
    await broken.close()


async def test_replay_reads_a_range_in_order_deterministically(ch: ClickHouse) -> None:
    inside = [
        ta(s, T0 + timedelta(seconds=i), i) for i in range(5) for s in ("MSFT", "AAPL", "ETH/USD")
    ]
    await insert(ch, inside[:7])
    await insert(ch, inside[7:])
    await insert(ch, [ta("AAPL", T0 - timedelta(milliseconds=1), 99)])  # before --from
    await insert(ch, [ta("AAPL", T0 + timedelta(seconds=5), 5)])  # at --to: excluded
    # A newer version of a key in range: replayed once, as its newest version.
    await insert(ch, [ta("MSFT", T0 + timedelta(seconds=2), 2, ingest_delay=timedelta(1), rsi=7)])
    query = RangeQuery(T0, T0 + timedelta(seconds=5), ("AAPL", "MSFT"))
    wanted = sorted(key_of(s) for s in inside if s.symbol != "ETH/USD")

    runs = []
    for n in range(2):
        out = ListPublisher()
        scope = ReplayScope(f"replay-{n}", ("paper-a",))
        result = await run_replay(ch, out, query, scope, page_size=4)
        assert out.published_keys() == wanted and result.published == len(wanted)
        assert {replay_scope_from_headers(h) for h in out.headers} == {scope}
        runs.append((result.digest, [s.model_dump() for s in out.signals]))
    assert runs[0] == runs[1]
    msft_2 = next(s for s in runs[0][1] if (s["symbol"], s["seq"]) == ("MSFT", 2))
    assert msft_2["rsi14"] == 7


async def test_replay_never_publishes_a_row_with_an_invalid_number(ch: ClickHouse) -> None:
    good = ta("AAPL", T0, 1)
    await insert(ch, [good, ta("AAPL", T0 + timedelta(seconds=1), 2, rsi=float("nan"))])
    out = ListPublisher()
    query = RangeQuery(T0, T0 + timedelta(seconds=5))
    result = await run_replay(ch, out, query, ReplayScope("replay-nan", ("paper-a",)))
    assert out.published_keys() == [key_of(good)]  # not as rsi14=null (JSON has no NaN)
    assert (result.published, result.invalid) == (1, 1)
