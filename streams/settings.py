"""Every setting of the app, typed and defaulted, read from the environment.

Each field's `validation_alias` is the exact environment variable name (the seeds' names are kept
verbatim) and its `description` is the README's configuration table: `make docs` regenerates the
table and a test fails when the README drifts from this model.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RuntimeMode(str, Enum):
    legacy = "legacy"
    plugin_v3 = "plugin_v3"
    scheduler_v3 = "scheduler_v3"


class FlagsBackend(str, Enum):
    static = "static"
    flipt = "flipt"


class SignalSource(str, Enum):
    kafka = "kafka"
    clickhouse = "clickhouse"


class KafkaSecurityProtocol(str, Enum):
    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(str, Enum):
    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    PLAIN = "PLAIN"


class BrokerHttpClient(str, Enum):
    aiohttp = "aiohttp"
    alpaca_py = "alpaca-py"


class PostgresSslMode(str, Enum):
    disable = "disable"
    prefer = "prefer"
    require = "require"
    verify_ca = "verify-ca"
    verify_full = "verify-full"


def env(name: str, default: Any, description: str, **kwargs: Any) -> Any:
    """A field read from exactly the environment variable `name`."""
    return Field(default, validation_alias=AliasChoices(name), description=description, **kwargs)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=None, extra="ignore", populate_by_name=False, frozen=True
    )

    # ---- app shell
    app_id: str = env(
        "TORGHUT_APP_ID",
        "torghut-streams",
        "Faust app id; also the Kafka consumer group id. Keep it stable: lag dashboards key on it.",
    )
    kafka_brokers: str = env(
        "KAFKA_BROKERS", "kafka://127.0.0.1:9092", "Kafka bootstrap servers (`kafka://h:p;h:p`)."
    )
    kafka_security_protocol: KafkaSecurityProtocol = env(
        "KAFKA_SECURITY_PROTOCOL",
        KafkaSecurityProtocol.PLAINTEXT,
        "`PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL` (Strimzi's SCRAM listener: "
        "`SASL_SSL`). Used by the worker, every CLI command, the forwarder and the bulk restore.",
    )
    kafka_sasl_mechanism: KafkaSaslMechanism = env(
        "KAFKA_SASL_MECHANISM",
        KafkaSaslMechanism.SCRAM_SHA_512,
        "SASL mechanism: `SCRAM-SHA-512`, `SCRAM-SHA-256` or `PLAIN`.",
    )
    kafka_sasl_username: str | None = env(
        "KAFKA_SASL_USERNAME", None, "SASL user (the Strimzi KafkaUser name)."
    )
    kafka_sasl_password_file: Path | None = env(
        "KAFKA_SASL_PASSWORD_FILE",
        None,
        "File holding the SASL password (a mounted Secret); read at connect time, never logged.",
    )
    kafka_ssl_ca_file: Path | None = env(
        "KAFKA_SSL_CA_FILE",
        None,
        "PEM CA bundle that signs the brokers' certificates (the cluster CA); unset = system CAs.",
    )
    store: str = env(
        "TORGHUT_STORE", "rocksdb://", "Table store URL (`rocksdb://` or `memory://`)."
    )
    data_dir: Path = env(
        "TORGHUT_DATA_DIR", Path(".data"), "Local state folder (RocksDB tables, worker data)."
    )
    web_host: str = env("TORGHUT_WEB_HOST", "127.0.0.1", "Bind address of the status web server.")
    web_port: int = env("TORGHUT_WEB_PORT", 6066, "Port of the status web server.")
    web_enabled: bool = env("TORGHUT_WEB_ENABLED", True, "Run the status web server.")
    topic_partitions: int = env(
        "TORGHUT_TOPIC_PARTITIONS",
        8,
        "Partitions of the project's topics and tables (co-partitioned; fixed after first start).",
    )
    topic_replication_factor: int = env(
        "TORGHUT_TOPIC_REPLICATION_FACTOR",
        3,
        "Replication factor of every topic the app or `topics` creates (changelogs, retries, "
        "re-keyed updates, control). The local stack sets 1 (one broker).",
        ge=1,
    )
    topic_min_insync_replicas: int = env(
        "TORGHUT_TOPIC_MIN_INSYNC_REPLICAS",
        2,
        "`min.insync.replicas` of the state topics (changelogs, retries, re-keyed updates, "
        "control); capped at the replication factor.",
        ge=1,
    )
    allow_unreplicated_state: bool = env(
        "TORGHUT_ALLOW_UNREPLICATED_STATE",
        False,
        "Let a worker with an enabled live account start on replication factor 1 (one copy of "
        "the ledger); without it that is a start-up error.",
    )
    table_standby_replicas: int = env(
        "TORGHUT_TABLE_STANDBY_REPLICAS", 1, "Standby replicas kept for each table."
    )
    table_bulk_restore: bool = env(
        "TORGHUT_TABLE_BULK_RESTORE",
        True,
        "Restore RocksDB tables from their changelogs in bulk before faust's per-event recovery "
        "(streams/state/restore.py); `false` leaves recovery entirely to faust.",
    )
    table_restore_processes: int = env(
        "TORGHUT_TABLE_RESTORE_PROCESSES",
        2,
        "Child processes of the bulk restore that turn changelog ranges into RocksDB SST files "
        "(used from 20,000 records on); 0 restores in the worker's event loop.",
        ge=0,
    )
    broker_session_timeout: float = env(
        "TORGHUT_BROKER_SESSION_TIMEOUT_SECONDS",
        30.0,
        "Kafka consumer session timeout; a dead worker's partitions move after this long.",
    )
    log_level: str = env("TORGHUT_LOG_LEVEL", "INFO", "Log level (DEBUG, INFO, WARNING, ERROR).")
    log_format: str = env("TORGHUT_LOG_FORMAT", "json", "Log format: `json` or `text`.")
    monitor_interval_seconds: float = env(
        "TORGHUT_MONITOR_INTERVAL_SECONDS",
        5.0,
        "How often consumer lag, recovery and lane gauges are refreshed (`/metrics`, status).",
    )
    lane_error_grace_seconds: float = env(
        "TORGHUT_LANE_ERROR_GRACE_SECONDS",
        60.0,
        "Retryable broker errors without a success for this long make a lane unhealthy.",
    )
    eager_delivery: bool = env(
        "TORGHUT_EAGER_DELIVERY",
        True,
        "The consumer's fetch loop hands each record to the streams inline, without mode's four "
        "tasks per record (`compat.EagerNoSkipConsumer`); a delivery that has to wait is raced "
        "against a rebalance exactly as faust does. `false`: faust's own loop.",
    )
    lean_drain: bool = env(
        "TORGHUT_LEAN_DRAIN",
        True,
        "The consumer's fetch loop hands a fetched batch to the streams in one loop, a record "
        "of a topic whose schema builds events synchronously (the signals topic, with "
        "`TORGHUT_SIGNAL_BATCH_MAX` on) put straight on its agent's queue when nothing would "
        "wait (`compat.LeanNoSkipConsumer`); anything else takes faust's path. Needs "
        "`TORGHUT_EAGER_DELIVERY`. The signals agent's batches are acked under one hold of "
        "faust's ack lock (`compat.ack_events`). `false`: faust's own loop, and `Event.ack` "
        "per signal.",
    )
    gc_freeze: bool = env(
        "TORGHUT_GC_FREEZE",
        True,
        "Once the worker has built its context, everything alive (modules, settings, the "
        "context) is moved out of the garbage collector's reach (`gc.freeze()`): its full "
        "collections no longer walk the ~200k start-up objects each time (one took ~0.12 s "
        "every ~3 s of signal flow, bench B6). It freezes once more when the first table "
        "recovery has finished (the consumer, its fetchers and the recovered tables are "
        "alive then). `false`: the collector as Python sets it up.",
    )
    gc_gen0_threshold: int = env(
        "TORGHUT_GC_GEN0_THRESHOLD",
        100_000,
        "The worker's garbage collector runs a young-generation pass after this many "
        "allocations (`gc.set_threshold`; Python's own is 700): per-signal objects die by "
        "reference count, and fewer passes promote fewer of them to the older generations "
        "whose full collections are costly; a pass walks only the young objects still alive, "
        "so it stays short (bench B6: 700 -> 100,000 took ~4 µs of CPU off each signal). "
        "`0`: Python's threshold.",
        ge=0,
    )
    signal_batch_max: int = env(
        "TORGHUT_SIGNAL_BATCH_MAX",
        500,
        "The signals agent takes up to this many queued signals at once "
        "(`compat.event_batches`): their decisions are sent in order and awaited together, and "
        "the batch is acked only once they are acknowledged and the watermarks advanced. `0`: "
        "one signal at a time (`compat.each_event_acked_when_done`).",
        ge=0,
    )

    # ---- topics
    signals_topic: str = env(
        "TORGHUT_SIGNALS_TOPIC", "torghut.ta.signals.v1", "TA signals in (key symbol; Avro/JSON)."
    )
    decisions_topic: str = env(
        "TORGHUT_DECISIONS_TOPIC",
        "torghut.trade-decisions.v1",
        "Account decisions (key account_label).",
    )
    order_feed_topic: str | None = env(
        "TRADING_ORDER_FEED_TOPIC",
        "torghut.trade-updates.v1",
        "Trade updates v1 (no account). Empty disables v1 reading (Phase 4 cutover).",
    )
    order_feed_topic_v2: str | None = env(
        "TRADING_ORDER_FEED_TOPIC_V2",
        "torghut.trade-updates.v2",
        "Trade updates v2 (with account_label). Empty disables v2 reading.",
    )
    dlq_topic: str = env(
        "TORGHUT_DLQ_TOPIC", "torghut.trading.dlq.v1", "Dead letters (reason, source coordinates)."
    )
    control_topic: str = env(
        "TORGHUT_CONTROL_TOPIC", "torghut.control.v1", "Compacted control topic (kill switches)."
    )

    # ---- input integrity
    max_event_time_skew_seconds: float = env(
        "TORGHUT_MAX_EVENT_TIME_SKEW_SECONDS",
        300.0,
        "Events dated more than this many seconds in the future are dead-lettered "
        "(`event_time_in_future`).",
    )
    ta_signal_schema_ids: str = env(
        "TORGHUT_TA_SIGNAL_SCHEMA_IDS",
        "7",
        "Confluent schema ids (comma-separated) read as `ta-signals.avsc` itself; another id "
        "is resolved through the schema registry, or dead-lettered (`unknown_schema_id`).",
        pattern=r"^\s*(\d{1,10}\s*(,\s*\d{1,10}\s*)*)?$",
    )
    schema_registry_url: str | None = env(
        "TORGHUT_SCHEMA_REGISTRY_URL",
        None,
        "Confluent schema registry: writer schemas of other TA signal schema ids are fetched "
        "from it (once) and resolved. Empty: only the ids above are read.",
    )

    # ---- storage
    database_url: SecretStr = env(
        "DATABASE_URL",
        SecretStr("postgresql://postgres@127.0.0.1:5432/torghut"),
        "PostgreSQL DSN (asyncpg form, `postgresql://user:pass@host:port/db`).",
    )
    database_password_file: Path | None = env(
        "DATABASE_PASSWORD_FILE",
        None,
        "File holding the Postgres password (a mounted Secret); overrides a password in "
        "`DATABASE_URL`.",
    )
    database_sslmode: PostgresSslMode | None = env(
        "DATABASE_SSLMODE",
        None,
        "Postgres TLS: `disable`, `prefer`, `require`, `verify-ca` or `verify-full` (production: "
        "`verify-full` with `DATABASE_SSL_ROOT_CERT_FILE`); unset = libpq's default (`prefer`).",
    )
    database_ssl_root_cert_file: Path | None = env(
        "DATABASE_SSL_ROOT_CERT_FILE",
        None,
        "PEM CA that signs the Postgres server certificate (for `verify-ca` / `verify-full`).",
    )
    database_pool_size: int = env("TORGHUT_DATABASE_POOL_SIZE", 8, "asyncpg pool size per worker.")
    clickhouse_dsn: SecretStr = env(
        "CLICKHOUSE_DSN",
        SecretStr("chdb://.data/chdb"),
        "ClickHouse: `chdb://PATH[?database=DB]` (embedded, default; a relative PATH is under "
        "the working directory) or `http://user:pass@host:8123/DB`; DB defaults to `torghut`.",
    )

    # ---- accounts
    multi_account_enabled: bool = env(
        "TRADING_MULTI_ACCOUNT_ENABLED",
        False,
        "Run one lane per enabled account of the registry; false = one lane from `APCA_*`.",
    )
    accounts_json: SecretStr | None = env(
        "TRADING_ACCOUNTS_JSON",
        None,
        'Account registry as JSON: an array or `{"accounts": [...]}` of '
        "`label, mode, api_key, secret_key, base_url, enabled` and optional per-account "
        "`limits` (README: Accounts).",
    )
    accounts_file: Path | None = env(
        "TRADING_ACCOUNTS_FILE", None, "Account registry as a YAML or JSON file (same entries)."
    )
    account_label: str = env(
        "TRADING_ACCOUNT_LABEL",
        "paper",
        "Label of the single-account lane, and the last-resort attribution of v1 trade updates.",
    )
    apca_api_key_id: SecretStr | None = env(
        "APCA_API_KEY_ID", None, "Alpaca key of the single-account lane."
    )
    apca_api_secret_key: SecretStr | None = env(
        "APCA_API_SECRET_KEY", None, "Alpaca secret of the single-account lane."
    )
    apca_api_base_url: str = env(
        "APCA_API_BASE_URL",
        "https://paper-api.alpaca.markets",
        "Alpaca REST base URL of the single-account lane (no `/v2`).",
    )
    trading_mode: str = env(
        "TRADING_MODE",
        "paper",
        "Mode (`paper` or `live`) of the single-account lane; registry entries carry their own.",
    )
    live_enabled: bool = env(
        "TRADING_LIVE_ENABLED",
        False,
        "Permission for any account in `live` mode; without it a live account is a startup error.",
    )

    # ---- strategy runtime
    strategy_runtime_mode: RuntimeMode = env(
        "TRADING_STRATEGY_RUNTIME_MODE",
        RuntimeMode.legacy,
        "`legacy` (MACD/RSI rule), `plugin_v3` or `scheduler_v3` (registry of plugins).",
    )
    strategy_scheduler_enabled: bool = env(
        "TRADING_STRATEGY_SCHEDULER_ENABLED",
        True,
        "false = configuration is verified but the legacy behaviour is kept (dark start).",
    )
    strategy_runtime_fallback_legacy: bool = env(
        "TRADING_STRATEGY_RUNTIME_FALLBACK_LEGACY",
        True,
        "Run the legacy rule when the plugins yield no intent.",
    )
    strategy_circuit_errors: int = env(
        "TRADING_STRATEGY_RUNTIME_CIRCUIT_ERRORS",
        3,
        "Consecutive errors after which a strategy is degraded.",
    )
    strategy_circuit_cooldown_seconds: int = env(
        "TRADING_STRATEGY_RUNTIME_CIRCUIT_COOLDOWN_SECONDS",
        300,
        "Seconds of signal event time a degraded strategy stays off.",
    )
    strategies_file: Path | None = env(
        "TRADING_STRATEGIES_FILE", None, "Strategy catalogue (YAML or JSON file)."
    )
    strategies_json: str | None = env(
        "TRADING_STRATEGIES_JSON", None, "Strategy catalogue as JSON (instead of a file)."
    )

    # ---- execution and risk
    kill_switch_enabled: bool = env(
        "TRADING_KILL_SWITCH_ENABLED",
        False,
        "Global kill switch: every lane rejects new orders (`kill_switch_enabled`).",
    )
    kill_switch_cancel_open_orders: bool = env(
        "TRADING_KILL_SWITCH_CANCEL_OPEN_ORDERS",
        False,
        "When a kill switch is engaged, also cancel that account's open orders (once).",
    )
    kill_switch_broker_suspend: bool = env(
        "TRADING_KILL_SWITCH_BROKER_SUSPEND",
        False,
        "Mirror an engaged kill switch to the broker's `suspend_trade` (PATCH "
        "/v2/account/configurations), so the broker itself refuses the account's new orders; "
        "released when no switch holds the account.",
    )
    max_order_qty: float = env(
        "TRADING_MAX_ORDER_QTY",
        10000.0,
        "Largest quantity of one order (`max_order_qty_exceeded`); 0 disables.",
        ge=0,
    )
    max_open_orders: int = env(
        "TRADING_MAX_OPEN_ORDERS",
        50,
        "Most open (unfilled) orders of one account (`max_open_orders_exceeded`); 0 disables.",
        ge=0,
    )
    order_rate_per_second: int = env(
        "TRADING_ORDER_RATE_PER_SECOND",
        5,
        "Most orders one account sends per second (`order_rate_throttled`); 0 disables.",
        ge=0,
    )
    order_rate_per_minute: int = env(
        "TRADING_ORDER_RATE_PER_MINUTE",
        120,
        "Most orders one account sends per minute (`order_rate_throttled`); 0 disables.",
        ge=0,
    )
    throttle_latch_hits: int = env(
        "TRADING_THROTTLE_LATCH_HITS",
        3,
        "Throttle refusals within `TRADING_THROTTLE_LATCH_WINDOW_SECONDS` after which the "
        "account is set `halted` through the control topic until an operator sets it `active`; "
        "0 never latches.",
        ge=0,
    )
    throttle_latch_window_seconds: float = env(
        "TRADING_THROTTLE_LATCH_WINDOW_SECONDS",
        60.0,
        "Window of `TRADING_THROTTLE_LATCH_HITS`.",
    )
    duplicate_intent_seconds: float = env(
        "TRADING_DUPLICATE_INTENT_SECONDS",
        5.0,
        "The same account, symbol and side from another decision within this many seconds of an "
        "order sent is refused (`duplicate_intent`); 0 disables.",
        ge=0,
    )
    daily_notional_cap: float = env(
        "TRADING_DAILY_NOTIONAL_CAP",
        250000.0,
        "Most notional (USD) one account sends per trading day, the America/New_York calendar "
        "date (`daily_notional_cap_exceeded`); "
        "0 disables.",
        ge=0,
    )
    price_collar_bps: float = env(
        "TRADING_PRICE_COLLAR_BPS",
        0.0,
        "Largest deviation (basis points) of an order's price from the latest TA price of its "
        "symbol, read by every worker from the signals topic (`price_collar_exceeded`; no TA "
        "price younger than `TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS`: "
        "`price_reference_missing`); replays on paper lanes are exempt; 0 disables.",
        ge=0,
    )
    price_reference_max_age_seconds: float = env(
        "TRADING_PRICE_REFERENCE_MAX_AGE_SECONDS",
        300.0,
        "Oldest TA price the price collar accepts as the reference.",
    )
    max_decision_age_seconds: float = env(
        "TRADING_MAX_DECISION_AGE_SECONDS",
        600.0,
        "A decision older than this (signal event time) is rejected as stale.",
    )
    max_notional_per_order: float = env(
        "TRADING_MAX_NOTIONAL_PER_ORDER", 5000.0, "Hard cap on one order's notional (USD).", ge=0
    )
    max_position_pct_equity: float = env(
        "TRADING_MAX_POSITION_PCT_EQUITY",
        0.25,
        "Largest position in one symbol as a fraction of equity.",
    )
    allow_shorts: bool = env("TRADING_ALLOW_SHORTS", False, "Allow sells that open a short.")
    symbol_allowlist: str = env(
        "TRADING_SYMBOL_ALLOWLIST", "", "Comma-separated symbols allowed to trade; empty = all."
    )
    broker_timeout_seconds: float = env(
        "TRADING_BROKER_TIMEOUT_SECONDS",
        5.0,
        "Timeout of one broker call (slot wait, then the request and its answer).",
    )
    broker_http: BrokerHttpClient = env(
        "TORGHUT_BROKER_HTTP",
        BrokerHttpClient.aiohttp,
        "HTTP client of the broker calls: `aiohttp` (alpaca-py's requests sent from the event "
        "loop, one keep-alive session per account) or `alpaca-py` (alpaca-py's own blocking "
        "client, one thread pool per account).",
    )
    broker_rate_limit_per_minute: int = env(
        "TRADING_BROKER_RATE_LIMIT_PER_MINUTE",
        190,
        "Per-account broker request budget (Alpaca allows 200/min).",
    )
    reconcile_interval_seconds: float = env(
        "TRADING_RECONCILE_INTERVAL_SECONDS", 30.0, "Interval of the per-account REST reconciler."
    )
    reconcile_account_timeout_seconds: float = env(
        "TRADING_RECONCILE_ACCOUNT_TIMEOUT_SECONDS",
        25.0,
        "Time budget of one account's reconciliation (accounts run in parallel, each bounded).",
    )
    reconcile_pending_after_seconds: float = env(
        "TRADING_RECONCILE_PENDING_AFTER_SECONDS",
        30.0,
        "A decision planned/submitting for longer is looked up at the broker by client order id.",
    )
    startup_reconcile_enabled: bool = env(
        "TORGHUT_STARTUP_RECONCILE_ENABLED",
        True,
        "Reconcile each account with the broker (open orders, positions, fills since its "
        "cursor) before its lane trades, after a start or rebalance; decisions meanwhile wait.",
    )
    startup_reconcile_timeout_seconds: float = env(
        "TORGHUT_STARTUP_RECONCILE_TIMEOUT_SECONDS",
        30.0,
        "Time budget of one attempt of an account's start-up reconciliation.",
        gt=0,
    )
    startup_reconcile_retry_max_seconds: float = env(
        "TORGHUT_STARTUP_RECONCILE_RETRY_MAX_SECONDS",
        60.0,
        "Longest backoff between failed start-up reconciliation attempts (1 s, 2 s, ... up to).",
        gt=0,
    )
    fill_replay_quiet_seconds: float = env(
        "TORGHUT_FILL_REPLAY_QUIET_SECONDS",
        60.0,
        "Replay the account's broker fills when an open order has had no event for this long "
        "(checked by the reconciler timer); 0 disables this trigger.",
        ge=0,
    )
    fill_replay_max_pages: int = env(
        "TORGHUT_FILL_REPLAY_MAX_PAGES",
        20,
        "Pages of 100 fill activities one replay applies at most (the next one continues).",
        gt=0,
    )
    position_drift_enabled: bool = env(
        "TORGHUT_POSITION_DRIFT_ENABLED",
        True,
        "Compare broker positions with those implied by this system's fills (reconciler timer).",
    )
    position_drift_grace_seconds: float = env(
        "TORGHUT_POSITION_DRIFT_GRACE_SECONDS",
        60.0,
        "A drift must last this long before it is reported (fills in flight are not drift).",
        ge=0,
    )
    position_drift_set_reducing: bool = env(
        "TORGHUT_POSITION_DRIFT_SET_REDUCING",
        False,
        "On a reported drift, set the account's trading state to reducing.",
    )

    # ---- order feed and trade-updates forwarder
    order_feed_batch_size: int = env(
        "TORGHUT_ORDER_FEED_BATCH_SIZE", 200, "Trade updates applied to Postgres per batch."
    )
    order_feed_batch_seconds: float = env(
        "TORGHUT_ORDER_FEED_BATCH_SECONDS",
        0.2,
        "Longest wait to fill an order-feed batch before applying what arrived.",
    )
    unattributed_sweep_seconds: float = env(
        "TORGHUT_UNATTRIBUTED_SWEEP_SECONDS",
        5.0,
        "How often the leader hands v1 trade updates held in `unattributed_order_events` "
        "(multi-account: no owner found yet) to the account that now owns their order.",
    )
    forwarder_emit_v1: bool = env(
        "TORGHUT_FORWARDER_EMIT_V1",
        False,
        "Trade-updates forwarder: also write v1 envelopes (no account) next to v2.",
    )
    forwarder_accounts: str = env(
        "TORGHUT_FORWARDER_ACCOUNTS",
        "",
        "Trade-updates forwarder: comma-separated account labels to stream; empty = all enabled.",
    )
    snapshot_interval_seconds: float = env(
        "TRADING_SNAPSHOT_INTERVAL_SECONDS", 60.0, "Interval of the account snapshot refresh."
    )

    # ---- feature flags
    flags_backend: FlagsBackend = env(
        "TRADING_FLAGS_BACKEND", FlagsBackend.static, "`static` (env/file) or `flipt`."
    )
    flags_file: Path | None = env(
        "TRADING_FLAGS_FILE", None, "Static flags file (YAML/JSON: `{entity: {flag: bool}}`)."
    )
    flipt_url: str = env("FLIPT_URL", "http://127.0.0.1:8080", "Flipt server URL.")
    flipt_namespace: str = env("FLIPT_NAMESPACE", "default", "Flipt namespace.")
    flipt_token: SecretStr | None = env("FLIPT_TOKEN", None, "Flipt client token.")
    flags_refresh_seconds: float = env(
        "TRADING_FLAGS_REFRESH_SECONDS", 5.0, "How often flags are re-read while running."
    )

    # ---- signal source (ClickHouse)
    signal_source: SignalSource = env(
        "TRADING_SIGNAL_SOURCE",
        SignalSource.kafka,
        "`kafka` (the TA topic) or `clickhouse` (leader polls `ta_signals`).",
    )
    clickhouse_poll_interval_seconds: float = env(
        "TRADING_CLICKHOUSE_POLL_INTERVAL_SECONDS",
        1.0,
        "Interval of the leader's ClickHouse poll (`TRADING_SIGNAL_SOURCE=clickhouse`).",
    )
    clickhouse_batch_size: int = env(
        "TRADING_CLICKHOUSE_BATCH_SIZE", 5000, "Rows per ClickHouse poll page (and replay page)."
    )
    clickhouse_lookback_seconds: float = env(
        "TRADING_CLICKHOUSE_LOOKBACK_SECONDS",
        30.0,
        "Rows landing up to this much older than the cursor are still read, once.",
    )
    ta_freshness_slo_seconds: float = env(
        "TRADING_TA_FRESHNESS_SLO_SECONDS", 120.0, "Max age of the newest TA signal per class."
    )
    ta_freshness_enabled: bool = env(
        "TRADING_TA_FRESHNESS_ENABLED",
        False,
        "Check the newest `ta_signals` event time per class (crypto, equity) in ClickHouse.",
    )
    ta_freshness_interval_seconds: float = env(
        "TRADING_TA_FRESHNESS_INTERVAL_SECONDS", 15.0, "Interval of the TA freshness check."
    )
    ta_freshness_block_orders: bool = env(
        "TRADING_TA_FRESHNESS_BLOCK_ORDERS",
        False,
        "Refuse new orders (`ta_stale`) for symbols whose class has stale TA.",
    )

    secrets_dir: Path | None = env(
        "TORGHUT_SECRETS_DIR",
        None,
        "Folder of files named like settings (e.g. `APCA_API_KEY_ID`, `TRADING_ACCOUNTS_JSON`), "
        "each read as that setting's value (mounted Secrets); environment variables win.",
    )
    control_feed_stale_seconds: float = env(
        "TORGHUT_CONTROL_FEED_STALE_SECONDS",
        60.0,
        "Lanes refuse new orders (`control_feed_stale`) when the control topic reader has not "
        "advanced (read, or confirmed it is at the end) for this long.",
    )

    order_feed_retry_seconds: float = env(
        "TORGHUT_ORDER_FEED_RETRY_SECONDS",
        30.0,
        "Budget of one order-feed batch for Postgres failures (retries, hung statements); past "
        "it the worker exits without acking the batch, which is redelivered after the restart.",
    )

    recovery_watchdog_seconds: float = env(
        "TORGHUT_RECOVERY_WATCHDOG_SECONDS",
        900.0,
        "A table recovery (start, rebalance) not finished after this long stops the worker "
        "(exit 70, `recovery_stuck`) so that it is restarted; 0 disables the watchdog.",
    )

    # ---- testing and fault injection (never set in production)
    crash_at: str | None = env(
        "TORGHUT_CRASH_AT",
        None,
        "Test only: exit the worker at a named step of the submit path.",
    )
    fault_restore_flush_stall_seconds: float = env(
        "TORGHUT_FAULT_RESTORE_FLUSH_STALL_SECONDS",
        0.0,
        "Test only: the bulk restore's final flush blocks the event loop this long, as a stuck "
        "RocksDB flush would (the restore overrun of the chaos suite).",
    )

    @property
    def data_path(self) -> Path:
        return self.data_dir.resolve()

    @property
    def ta_signal_schema_id_set(self) -> frozenset[int]:
        return frozenset(int(part) for part in self.ta_signal_schema_ids.split(",") if part.strip())


def load_settings() -> Settings:
    """Settings from the environment and, when TORGHUT_SECRETS_DIR names a folder, its files.
    Each process calls it once, at its entry point, and passes the result on."""
    folder = os.environ.get("TORGHUT_SECRETS_DIR")
    return Settings(_secrets_dir=folder) if folder else Settings()
