"""Row <-> TaSignal conversion and CLICKHOUSE_DSN parsing (no engine needed)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.ta_signal import TaSignal
from streams.clickhouse.client import parse_dsn
from streams.clickhouse.rows import SIGNAL_COLUMNS, row_to_signal, signal_to_row
from streams.clickhouse.schema import TA_SIGNALS_COLUMNS

TS = datetime(2026, 3, 2, 14, 30, 1, 7000, tzinfo=UTC)


def full_signal() -> TaSignal:
    return TaSignal.model_validate(
        {
            "ingest_ts": TS,
            "event_ts": TS,
            "symbol": "BTC/USD",
            "seq": 42,
            "is_final": True,
            "source": "flink",
            "window": {
                "size": "PT1S",
                "step": "PT1S",
                "start": "2026-03-02T14:30:00.000Z",
                "end": "2026-03-02T14:30:01.000Z",
            },
            "macd": {"macd": 1.5, "signal": 1.0, "hist": 0.5},
            "ema": {"ema12": 10.0, "ema26": 9.0},
            "rsi14": 31.0,
            "boll": {"mid": 10.0, "upper": 11.0, "lower": 9.0},
            "vwap": {"session": 10.2, "w5m": None},
            "imbalance": {"spread": 0.1, "bid_px": 10.0, "ask_px": 10.1, "bid_sz": 3, "ask_sz": 5},
            "vol_realized": {"w60s": 0.02},
            "version": 1,
        }
    )


def test_signal_survives_the_flattened_row() -> None:
    sig = full_signal()
    row = signal_to_row(sig)
    assert set(row) == set(SIGNAL_COLUMNS)
    assert row_to_signal(row) == sig


def test_every_column_is_in_the_ddl() -> None:
    for column in SIGNAL_COLUMNS:
        assert f"\n  {column} " in TA_SIGNALS_COLUMNS


def test_a_partial_nested_record_is_absent_not_invalid() -> None:
    row = signal_to_row(full_signal())
    row.update(macd_hist=None, ema26=None, imbalance_ask_sz=None, window_size="")
    sig = row_to_signal(row)
    assert sig.macd is None and sig.ema is None and sig.imbalance is None and sig.window is None
    assert sig.vwap is not None and sig.vwap.w5m is None


def test_naive_times_from_the_driver_are_utc() -> None:
    row = signal_to_row(full_signal())
    row["event_ts"] = TS.replace(tzinfo=None)
    assert row_to_signal(row).event_ts == TS


def test_chdb_dsn_paths_and_database(tmp_path: Path) -> None:
    rel = parse_dsn("chdb://.data/chdb", cwd=tmp_path)
    assert (rel.kind, rel.path, rel.database) == ("chdb", tmp_path / ".data/chdb", "torghut")
    absolute = parse_dsn("chdb:///var/lib/ch?database=ta_test")
    assert (absolute.path, absolute.database) == (Path("/var/lib/ch"), "ta_test")


def test_server_dsn_keeps_the_password_out_of_its_description() -> None:
    target = parse_dsn("http://user:s3cret@ch.example:8123/analytics")
    assert target.kind == "http" and target.database == "analytics"
    assert "s3cret" not in target.describe() and "s3cret" not in repr(target)


@pytest.mark.parametrize(
    "dsn", ["chdb://", "chdb://memory", "tcp://h:9000", "chdb:///x?database=a-b"]
)
def test_unusable_dsns_are_refused(dsn: str) -> None:
    with pytest.raises(ValueError):
        parse_dsn(dsn)
