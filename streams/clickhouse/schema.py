"""DDL of the TA tables as the upstream Flink TA job writes them (single node, no cluster).

Both tables: ReplacingMergeTree(ingest_ts) — the newest ingest of a key wins at merge time —
ORDER BY (symbol, event_ts, seq), partitioned by day, times DateTime64(3, 'UTC'), TTL 14 days
on event time. The nested TaSignal records are flattened into Nullable columns.
"""

from __future__ import annotations

from streams.clickhouse.client import ClickHouse

DEFAULT_TTL_DAYS = 14
TS = "DateTime64(3, 'UTC')"

_KEY_COLUMNS = f"""
  symbol LowCardinality(String),
  event_ts {TS},
  seq UInt64,
  ingest_ts {TS},
  is_final UInt8,
  source LowCardinality(String),
  window_size LowCardinality(String),
  window_step Nullable(String),
  window_start Nullable({TS}),
  window_end Nullable({TS}),
  version UInt32"""

TA_SIGNALS_COLUMNS = (
    _KEY_COLUMNS
    + """,
  macd Nullable(Float64),
  macd_signal Nullable(Float64),
  macd_hist Nullable(Float64),
  ema12 Nullable(Float64),
  ema26 Nullable(Float64),
  rsi14 Nullable(Float64),
  boll_mid Nullable(Float64),
  boll_upper Nullable(Float64),
  boll_lower Nullable(Float64),
  vwap_session Nullable(Float64),
  vwap_w5m Nullable(Float64),
  imbalance_spread Nullable(Float64),
  imbalance_bid_px Nullable(Float64),
  imbalance_ask_px Nullable(Float64),
  imbalance_bid_sz Nullable(UInt64),
  imbalance_ask_sz Nullable(UInt64),
  vol_realized_w60s Nullable(Float64)"""
)

TA_MICROBARS_COLUMNS = (
    _KEY_COLUMNS
    + """,
  o Float64,
  h Float64,
  l Float64,
  c Float64,
  v Float64,
  vwap Nullable(Float64),
  count UInt64"""
)


def create_table_sql(table: str, columns: str, ttl_days: int | None) -> str:
    ttl = f"\nTTL toDateTime(event_ts) + INTERVAL {int(ttl_days)} DAY" if ttl_days else ""
    return (
        f"CREATE TABLE IF NOT EXISTS {table}\n({columns}\n)\n"
        "ENGINE = ReplacingMergeTree(ingest_ts)\n"
        "PARTITION BY toDate(event_ts)\n"
        f"ORDER BY (symbol, event_ts, seq){ttl}\n"
        "SETTINGS index_granularity = 8192"
    )


def schema_statements(ch: ClickHouse, ttl_days: int | None = DEFAULT_TTL_DAYS) -> list[str]:
    return [
        f"CREATE DATABASE IF NOT EXISTS `{ch.database}`",
        create_table_sql(ch.table("ta_signals"), TA_SIGNALS_COLUMNS, ttl_days),
        create_table_sql(ch.table("ta_microbars"), TA_MICROBARS_COLUMNS, ttl_days),
    ]


async def init_schema(ch: ClickHouse, ttl_days: int | None = DEFAULT_TTL_DAYS) -> list[str]:
    """Create the database and both tables if absent (idempotent); the tables touched."""
    for statement in schema_statements(ch, ttl_days):
        await ch.command(statement)
    return [ch.table("ta_signals"), ch.table("ta_microbars")]
