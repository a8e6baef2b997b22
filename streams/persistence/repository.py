"""asyncpg repository: the hot-path SQL of the execution plane (no ORM here).

Rules every statement follows:
- Account scope is always an AND: `alpaca_account_label = $1 AND (order id match)`. An order id
  or client order id is never looked up outside its account (the reference's OR-ed account
  branch matched events of one account to another's execution).
- Batches take one round trip: the rows travel as parallel arrays and `unnest` into one
  `INSERT ... SELECT ... ON CONFLICT` (JSON travels as text and is cast: asyncpg would read a
  list inside a jsonb[] as another array dimension).
- One deliberate exception: `order_owners` (and the sweep's read of held events) looks an order id
  up across accounts, because the account is what it finds; it returns labels, never rows.
- Executions and decisions only move forward (status rank, cumulative fill, terminal stays
  terminal), decided inside the UPDATE's WHERE so concurrent writers cannot interleave a regress.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import asyncpg

from streams.persistence.dsn import asyncpg_dsn
from streams.persistence.rows import (
    ApplyOutcome,
    ApplyResult,
    CursorRow,
    DecisionRow,
    ExecutionRow,
    FillCursorRow,
    HeldEventRow,
    OrderEventRow,
    OrderUpdateRow,
    PendingDecision,
    PositionSnapshotRow,
    StrategyRow,
    SubmissionRow,
)
from streams.persistence.status import (
    DECISION_RANKS,
    DECISION_TERMINAL,
    EXECUTION_RANKS,
    EXECUTION_TERMINAL,
    TERMINAL,
    decision_rank,
    decision_status_for,
    execution_rank,
    rank_sql,
    rejection_reasons_sql,
)

__all__ = [
    "ApplyOutcome",
    "ApplyResult",
    "CursorRow",
    "DecisionRow",
    "ExecutionRow",
    "HeldEventRow",
    "OrderEventRow",
    "OrderUpdateRow",
    "PendingDecision",
    "PositionSnapshotRow",
    "Repository",
    "StrategyRow",
]

log = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, separators=(",", ":"))


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Released connections skip asyncpg's default reset query (RESET ALL, UNLISTEN, advisory
    unlock, CLOSE ALL): one extra round trip on every pool release, for session state this
    repository never sets. asyncpg still rolls back an open transaction first."""


def _count(status: str) -> int:
    """Row count from a command tag such as `INSERT 0 12` or `UPDATE 3`."""
    return int(status.rsplit(" ", 1)[-1])


# ---------------------------------------------------------------------------------------------
# SQL. Ranks are rendered from streams.persistence.status, the one source of the order.

_EXEC_RANK = rank_sql("e.status", EXECUTION_RANKS)
_DEC_RANK = rank_sql("d.status", DECISION_RANKS)
_EXCLUDED_DEC_RANK = rank_sql("EXCLUDED.status", DECISION_RANKS)

# Given reasons replace the stored ones; a rejection without any gets the standard one.
_UPSERT_REASONS = rejection_reasons_sql(
    "EXCLUDED.status",
    "CASE WHEN jsonb_array_length(EXCLUDED.rejection_reasons) > 0 "
    "THEN EXCLUDED.rejection_reasons ELSE d.rejection_reasons END",
)
_UPSERT_DECISIONS = f"""
INSERT INTO trade_decisions AS d (
    alpaca_account_label, decision_hash, strategy_id, symbol, timeframe, action, event_ts,
    status, qty, notional, price, confidence, rejection_reasons, decision_json,
    executed_at)
SELECT u.account, u.hash, u.strategy_id, u.symbol, u.timeframe, u.action, u.event_ts,
       u.status, u.qty, u.notional, u.price, u.confidence,
       {rejection_reasons_sql("u.status", "u.reasons::jsonb")}, u.body::jsonb,
       CASE WHEN u.status = 'filled' THEN now() END
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::text[], $9::numeric[], $10::numeric[], $11::numeric[],
            $12::float8[], $13::text[], $14::text[])
     AS u(account, hash, strategy_id, symbol, timeframe, action, event_ts, status, qty,
          notional, price, confidence, reasons, body)
ON CONFLICT (alpaca_account_label, decision_hash) DO UPDATE SET
    status = EXCLUDED.status,
    rejection_reasons = {_UPSERT_REASONS},
    executed_at = COALESCE(d.executed_at, EXCLUDED.executed_at),
    updated_at = now()
WHERE {_DEC_RANK} < {_EXCLUDED_DEC_RANK}
"""

_SET_REASONS = rejection_reasons_sql("$3::text", "COALESCE($4::jsonb, d.rejection_reasons)")
_SET_DECISION_STATUS = f"""
UPDATE trade_decisions d SET
    status = $3::text,
    rejection_reasons = {_SET_REASONS},
    executed_at = CASE WHEN $3::text = 'filled' THEN COALESCE(d.executed_at, now())
                       ELSE d.executed_at END,
    updated_at = now()
WHERE d.alpaca_account_label = $1 AND d.decision_hash = $2 AND {_DEC_RANK} < $5::int
"""

_EXECUTION_COLUMNS = """
    id, trade_decision_id, alpaca_account_label, client_order_id, alpaca_order_id, symbol, side,
    order_type, time_in_force, submitted_qty, filled_qty, avg_fill_price, status, raw_order,
    last_event_ts"""

_EXECUTION_INSERT = """
INSERT INTO executions AS e (
    alpaca_account_label, client_order_id, alpaca_order_id, trade_decision_id, symbol, side,
    order_type, time_in_force, submitted_qty, filled_qty, avg_fill_price, status, raw_order,
    last_event_ts)
"""

_EXECUTION_ON_CONFLICT = f"""
ON CONFLICT (alpaca_account_label, client_order_id) DO UPDATE SET
    alpaca_order_id = COALESCE(e.alpaca_order_id, EXCLUDED.alpaca_order_id),
    trade_decision_id = COALESCE(e.trade_decision_id, EXCLUDED.trade_decision_id),
    status = CASE WHEN {_EXEC_RANK} < $14::int THEN EXCLUDED.status ELSE e.status END,
    filled_qty = CASE WHEN {_EXEC_RANK} >= {TERMINAL} THEN e.filled_qty
                      ELSE GREATEST(e.filled_qty, EXCLUDED.filled_qty) END,
    avg_fill_price = CASE WHEN {_EXEC_RANK} < {TERMINAL} AND EXCLUDED.filled_qty > e.filled_qty
                          THEN COALESCE(EXCLUDED.avg_fill_price, e.avg_fill_price)
                          ELSE COALESCE(e.avg_fill_price, EXCLUDED.avg_fill_price) END,
    raw_order = CASE WHEN {_EXEC_RANK} < $14::int THEN COALESCE(EXCLUDED.raw_order, e.raw_order)
                     ELSE COALESCE(e.raw_order, EXCLUDED.raw_order) END,
    last_event_ts = GREATEST(e.last_event_ts, EXCLUDED.last_event_ts),
    updated_at = now()
RETURNING id, trade_decision_id, status
"""

_UPSERT_EXECUTION = f"""{_EXECUTION_INSERT}VALUES ($1::text, $2::text, $3::text,
        (SELECT d.id FROM trade_decisions d
         WHERE d.alpaca_account_label = $1::text AND d.decision_hash = $2::text),
        $4::text, $5::text, $6::text, $7::text, $8::numeric, $9::numeric, $10::numeric,
        $11::text, $12::jsonb, $13::timestamptz)
{_EXECUTION_ON_CONFLICT}"""

# The same, written only when the decision row exists (its id comes from it).
_UPSERT_DECIDED_EXECUTION = f"""{_EXECUTION_INSERT}
SELECT $1::text, $2::text, $3::text, d.id, $4::text, $5::text, $6::text, $7::text,
       $8::numeric, $9::numeric, $10::numeric, $11::text, $12::jsonb, $13::timestamptz
FROM trade_decisions d WHERE d.alpaca_account_label = $1::text AND d.decision_hash = $2::text
{_EXECUTION_ON_CONFLICT}"""


def _decision_status_sql(column: str) -> str:
    """`decision_status_for(column)` in SQL (constants only)."""
    mirrored = ", ".join(f"'{s}'" for s in sorted(DECISION_TERMINAL | {"partially_filled"}))
    return (
        f"(CASE WHEN {column} IN ({mirrored}) THEN {column}"
        f" WHEN {column} = 'submitting' THEN 'submitting' ELSE 'submitted' END)"
    )


def _and_mirror(upsert: str) -> str:
    """The upsert, the mirror of its status to the linked decision and a check for unlinked
    events of the order, as one (atomic) statement: one round trip instead of five (BEGIN, three
    statements, COMMIT) on the lane's path after every ack. The upsert writes only `executions`,
    which neither the mirror nor the check reads. Found events are then linked and folded in a
    transaction of their own (`_late_link`; rare: an order event that beat its execution row).
    """
    return f"""
WITH ex AS ({upsert.strip()}),
m AS (SELECT ex.trade_decision_id AS id, {_decision_status_sql("ex.status")} AS status FROM ex),
mirrored AS (
    UPDATE trade_decisions d SET
        status = m.status,
        rejection_reasons = {rejection_reasons_sql("m.status", "d.rejection_reasons")},
        executed_at = CASE WHEN m.status = 'filled' THEN COALESCE(d.executed_at, now())
                           ELSE d.executed_at END,
        updated_at = now()
    FROM m
    WHERE d.alpaca_account_label = $1::text AND d.id = m.id
      AND {_DEC_RANK} < {rank_sql("m.status", DECISION_RANKS)}
)
SELECT ex.id, ex.trade_decision_id, ex.status,
       EXISTS (SELECT 1 FROM execution_order_events ev
               WHERE ev.execution_id IS NULL AND ev.alpaca_account_label = $1::text
                 AND (ev.client_order_id = $2::text OR ev.alpaca_order_id = $3::text))
           AS unlinked_events
FROM ex
"""


_UPSERT_EXECUTION_AND_MIRROR = _and_mirror(_UPSERT_EXECUTION)
_UPSERT_DECIDED_EXECUTION_AND_MIRROR = _and_mirror(_UPSERT_DECIDED_EXECUTION)

# Late linking: unlinked events of this account that name this order (either id).
_LINK_EVENTS = """
UPDATE execution_order_events ev SET
    execution_id = $1, trade_decision_id = COALESCE(ev.trade_decision_id, $2)
WHERE ev.execution_id IS NULL AND ev.alpaca_account_label = $3
  AND (ev.client_order_id = $4 OR ev.alpaca_order_id = $5)
RETURNING ev.status, ev.event_ts, ev.filled_qty, ev.filled_avg_price, ev.alpaca_order_id
"""


# An over-fill: the update's cumulative fill is above the order's quantity (known, > 0). The
# update is refused (the execution is left as it was) and recorded in `order_fill_refusals`.
_OVERFILL = "(t.submitted_qty > 0 AND COALESCE($6::numeric, 0) > t.submitted_qty)"
OVERFILL = "overfill"

_RECORD_REFUSAL = """
INSERT INTO order_fill_refusals (
    alpaca_account_label, execution_id, alpaca_order_id, client_order_id, reason, order_qty,
    filled_qty, status, event_ts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT DO NOTHING
"""


# The average price after an update that has none (a replayed fill activity carries its own
# price and quantity, not the order's average): the stored average of what was filled before,
# weighted with the stored fills (one row per broker execution id) that take the order from
# there to the update's cumulative quantity; NULL unless those fills add up to exactly that.
_FILLS_AVG = """(
    SELECT (e.filled_qty * COALESCE(e.avg_fill_price, 0) + SUM(ev.qty * ev.price)) / $6::numeric
    FROM execution_order_events ev
    WHERE ev.execution_id = e.id AND ev.alpaca_account_label = $1::text
      AND ev.execution_id_alpaca IS NOT NULL AND ev.event_type IN ('fill', 'partial_fill')
      AND ev.qty > 0 AND ev.price IS NOT NULL
      AND ev.filled_qty > e.filled_qty AND ev.filled_qty <= $6::numeric
    HAVING SUM(ev.qty) = $6::numeric - e.filled_qty
       AND (e.filled_qty = 0 OR e.avg_fill_price IS NOT NULL)
)"""


def _apply_sql(target: str) -> str:
    """One statement: find the execution (`target`), move it forward if the update allows,
    mirror the new status to its decision, and report both the old and the new state.

    Parameters: $1 account, $2 alpaca order id, $3 client order id (or execution id),
    $4 status rank, $5 status, $6 cumulative filled qty, $7 avg fill price, $8 raw order,
    $9 event time, $10 decision status, $11 decision status rank.
    """
    return f"""
WITH target AS ({target}),
upd AS (
    UPDATE executions e SET
        status = CASE WHEN {_EXEC_RANK} < {TERMINAL} AND {_EXEC_RANK} < $4::int THEN $5::text
                      ELSE e.status END,
        filled_qty = GREATEST(e.filled_qty, COALESCE($6::numeric, e.filled_qty)),
        avg_fill_price = CASE WHEN COALESCE($6::numeric, e.filled_qty) > e.filled_qty
                              THEN COALESCE($7::numeric, {_FILLS_AVG}, e.avg_fill_price)
                              ELSE COALESCE(e.avg_fill_price, $7::numeric) END,
        alpaca_order_id = COALESCE(e.alpaca_order_id, $2::text),
        raw_order = COALESCE($8::jsonb, e.raw_order),
        last_event_ts = GREATEST(e.last_event_ts, $9::timestamptz),
        updated_at = now()
    FROM target t
    WHERE e.id = t.id AND e.alpaca_account_label = $1::text
      AND (({_EXEC_RANK} < {TERMINAL}
            AND ({_EXEC_RANK} < $4::int OR COALESCE($6::numeric, 0) > e.filled_qty))
           -- the average price of a fill first seen without one (a replayed fill activity)
           OR (e.avg_fill_price IS NULL AND $7::numeric IS NOT NULL AND e.filled_qty > 0
               AND COALESCE($6::numeric, 0) = e.filled_qty))
      AND NOT {_OVERFILL}
    RETURNING e.id, e.status, e.filled_qty, e.trade_decision_id
),
dec AS (
    UPDATE trade_decisions d SET
        status = $10::text,
        rejection_reasons = {rejection_reasons_sql("$10::text", "d.rejection_reasons")},
        executed_at = CASE WHEN $10::text = 'filled'
                           THEN COALESCE(d.executed_at, $9::timestamptz, now())
                           ELSE d.executed_at END,
        updated_at = now()
    FROM upd
    WHERE d.id = upd.trade_decision_id AND d.alpaca_account_label = $1::text
      AND upd.status = $5::text AND {_DEC_RANK} < $11::int
    RETURNING d.id
)
SELECT t.id AS target_id, t.status AS old_status, t.filled_qty AS old_filled,
       upd.id AS updated_id, upd.status AS new_status, upd.filled_qty AS new_filled,
       (SELECT count(*) FROM dec) AS decisions,
       {_OVERFILL} AS overfill, t.submitted_qty AS order_qty
FROM target t LEFT JOIN upd ON upd.id = t.id
"""


_APPLY_BY_ORDER = _apply_sql(
    """
    SELECT id, status, filled_qty, submitted_qty FROM executions
    WHERE alpaca_account_label = $1::text
      AND (alpaca_order_id = $2::text OR client_order_id = $3::text)
    ORDER BY (alpaca_order_id = $2::text) IS TRUE DESC, id
    LIMIT 1"""
)
_APPLY_BY_ID = _apply_sql(
    """
    SELECT id, status, filled_qty, submitted_qty FROM executions
    WHERE alpaca_account_label = $1::text AND id = $3::bigint"""
)

_APPEND_EVENTS = """
INSERT INTO execution_order_events (
    event_fingerprint, source_topic, source_partition, source_offset, alpaca_account_label,
    execution_id, trade_decision_id, alpaca_order_id, client_order_id, symbol, event_type, status,
    event_ts, execution_id_alpaca, qty, price, filled_qty, filled_avg_price, raw)
SELECT u.fp, u.topic, u.part, u.off, u.account, x.id, COALESCE(x.trade_decision_id, dd.id),
       u.aoid, u.coid, u.symbol, u.etype, u.status, u.ts, u.fill_id, u.qty, u.price,
       u.filled, u.avg, u.raw::jsonb
FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::text[],
            $13::numeric[], $14::numeric[], $15::numeric[], $16::numeric[], $17::text[])
     WITH ORDINALITY
     AS u(fp, topic, part, off, account, aoid, coid, symbol, etype, status, ts, fill_id, qty,
          price, filled, avg, raw, ord)
LEFT JOIN LATERAL (
    SELECT e.id, e.trade_decision_id FROM executions e
    WHERE e.alpaca_account_label = u.account
      AND (e.alpaca_order_id = u.aoid OR e.client_order_id = u.coid)
    ORDER BY (e.alpaca_order_id = u.aoid) IS TRUE DESC, e.id
    LIMIT 1
) x ON true
LEFT JOIN trade_decisions dd
       ON dd.alpaca_account_label = u.account AND dd.decision_hash = u.coid
ORDER BY u.ord  -- ids follow arrival order
ON CONFLICT DO NOTHING
"""

_OPEN_EXECUTIONS = f"""
SELECT {_EXECUTION_COLUMNS} FROM executions
WHERE alpaca_account_label = $1 AND status <> ALL($2::text[])
ORDER BY id
"""

# The account's orders that reached the broker (a `system` execution) recorded since $4, for
# rebuilding the pre-trade windows. The decision's index (account, status, created_at) bounds
# the scan: a decision row is written before its order is sent, at most the decision age limit
# after its signal ($3 is that much earlier than $4).
_RECENT_SUBMISSIONS = """
SELECT e.client_order_id AS decision_hash, e.symbol, e.side, e.created_at AS at,
       e.submitted_qty * COALESCE(d.price, d.notional / NULLIF(d.qty, 0), 0) AS notional
FROM trade_decisions d
JOIN executions e
  ON e.trade_decision_id = d.id AND e.alpaca_account_label = d.alpaca_account_label
WHERE d.alpaca_account_label = $1 AND d.status = ANY($2::text[]) AND d.created_at >= $3
  AND e.alpaca_account_label = $1 AND e.origin = 'system' AND e.created_at >= $4
ORDER BY e.created_at, e.id
"""

_GET_EXECUTION = f"""
SELECT {_EXECUTION_COLUMNS} FROM executions
WHERE alpaca_account_label = $1 AND (client_order_id = $2::text OR alpaca_order_id = $3::text)
ORDER BY (alpaca_order_id = $3::text) IS TRUE DESC, id
LIMIT 1
"""

_DECISIONS_PENDING = """
SELECT id, alpaca_account_label AS account_label, decision_hash, strategy_id, symbol, action,
       status, event_ts, created_at, updated_at, decision_json
FROM trade_decisions
WHERE alpaca_account_label = $1 AND status = ANY($2::text[]) AND created_at < $3
ORDER BY created_at, id
LIMIT $4
"""

_UPSERT_CURSOR = """
INSERT INTO trade_cursor (source, account_label, cursor_ts, cursor_symbol, cursor_seq)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (source, account_label) DO UPDATE SET
    cursor_ts = EXCLUDED.cursor_ts, cursor_symbol = EXCLUDED.cursor_symbol,
    cursor_seq = EXCLUDED.cursor_seq, updated_at = now()
"""

_GET_CURSOR = """
SELECT source, account_label, cursor_ts, cursor_symbol, cursor_seq, updated_at
FROM trade_cursor WHERE source = $1 AND account_label = $2
"""

_INSERT_SNAPSHOT = """
INSERT INTO position_snapshots (alpaca_account_label, as_of, equity, cash, buying_power, positions)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING id
"""

_LATEST_SNAPSHOT = """
SELECT alpaca_account_label, as_of, equity, cash, buying_power, positions
FROM position_snapshots WHERE alpaca_account_label = $1
ORDER BY as_of DESC, id DESC LIMIT 1
"""

_UPSERT_STRATEGIES = """
INSERT INTO strategies AS s (id, name, description, strategy_type, version, enabled,
                             base_timeframe, universe, params)
SELECT u.id, u.name, u.description, u.strategy_type, u.version, u.enabled, u.base_timeframe,
       u.universe::jsonb, u.params::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bool[],
            $7::text[], $8::text[], $9::text[])
     AS u(id, name, description, strategy_type, version, enabled, base_timeframe, universe,
          params)
ON CONFLICT (id) DO UPDATE SET
    name = EXCLUDED.name, description = EXCLUDED.description,
    strategy_type = EXCLUDED.strategy_type, version = EXCLUDED.version,
    enabled = EXCLUDED.enabled, base_timeframe = EXCLUDED.base_timeframe,
    universe = EXCLUDED.universe, params = EXCLUDED.params, updated_at = now()
"""


# The accounts that own an order: by client order id (= decision hash, which has the account
# inside it) when the event has one, else by Alpaca order id. Never both: an event whose client id
# is unknown must not be given to the account of a matching Alpaca id.
_OWNERS_SQL = """
SELECT DISTINCT o.label FROM (
    SELECT d.alpaca_account_label AS label FROM trade_decisions d
    WHERE {cid} IS NOT NULL AND d.decision_hash = {cid}
    UNION ALL
    SELECT e.alpaca_account_label FROM executions e
    WHERE {cid} IS NOT NULL AND e.client_order_id = {cid}
    UNION ALL
    SELECT e.alpaca_account_label FROM executions e
    WHERE {cid} IS NULL AND e.alpaca_order_id = {oid}
) o ORDER BY 1
"""
_ORDER_OWNERS = _OWNERS_SQL.format(cid="$1::text", oid="$2::text")

_HOLD_EVENT = """
INSERT INTO unattributed_order_events (
    event_fingerprint, source_topic, source_partition, source_offset, alpaca_order_id,
    client_order_id, symbol, event_type, event_ts, raw)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)
ON CONFLICT DO NOTHING
"""

_HELD_WITH_OWNERS = f"""
SELECT u.id, u.event_fingerprint, u.source_topic, u.source_partition, u.source_offset,
       u.alpaca_order_id, u.client_order_id, u.symbol, u.event_type, u.event_ts, u.raw,
       ARRAY({_OWNERS_SQL.format(cid="u.client_order_id", oid="u.alpaca_order_id").strip()})
           AS owners
FROM unattributed_order_events u
ORDER BY u.id
LIMIT $1
"""


# ---- broker reconciliation (issue #17): fill cursors, external orders, implied positions

_GET_FILL_CURSOR = """
SELECT account_label, page_token, baseline_positions FROM broker_fill_cursors
WHERE account_label = $1
"""

_INIT_FILL_CURSOR = """
INSERT INTO broker_fill_cursors (account_label, page_token, baseline_positions)
VALUES ($1, $2, $3::jsonb)
ON CONFLICT (account_label) DO NOTHING
"""

_ADVANCE_FILL_CURSOR = """
UPDATE broker_fill_cursors SET page_token = $2, updated_at = now() WHERE account_label = $1
"""

_ADOPT_EXTERNAL = """
INSERT INTO executions AS e (
    alpaca_account_label, client_order_id, alpaca_order_id, trade_decision_id, symbol, side,
    order_type, time_in_force, submitted_qty, filled_qty, avg_fill_price, status, raw_order,
    last_event_ts, origin)
VALUES ($1::text, $2::text, $3::text, NULL, $4::text, $5::text, $6::text, $7::text,
        $8::numeric, $9::numeric, $10::numeric, $11::text, $12::jsonb, $13::timestamptz,
        'external')
ON CONFLICT DO NOTHING
RETURNING id
"""

_DECISION_EXISTS = """
SELECT EXISTS (SELECT 1 FROM trade_decisions
               WHERE alpaca_account_label = $1 AND decision_hash = $2)
"""

# Signed cumulative fills of every execution of one account (system and external), by symbol.
_IMPLIED_POSITIONS = """
SELECT symbol, sum(CASE WHEN lower(side) = 'sell' THEN -filled_qty ELSE filled_qty END) AS qty
FROM executions WHERE alpaca_account_label = $1 AND filled_qty <> 0
GROUP BY symbol
"""


# ---------------------------------------------------------------------------------------------


_PIN_ACCOUNT_SQL = """
WITH ins AS (
    INSERT INTO account_pins (account_label, broker_account_number) VALUES ($1::text, $2::text)
    ON CONFLICT (account_label) DO NOTHING
    RETURNING broker_account_number
)
SELECT broker_account_number FROM ins
UNION ALL
SELECT broker_account_number FROM account_pins WHERE account_label = $1::text
LIMIT 1"""


# Claim the action of a control command for one account: a new row, or a row whose earlier
# attempt failed or was left unfinished (a crash) for longer than $10 seconds. Nothing when it is
# done (or in progress elsewhere): the action runs once per (account, command_id).
_CLAIM_CONTROL_ACTION_SQL = """
INSERT INTO control_actions AS c (
    alpaca_account_label, command_id, kind, action, scope, operator, reason, issued_at, status
) VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text,
          $8::timestamptz, $9::text)
ON CONFLICT (alpaca_account_label, command_id) DO UPDATE
    SET status = EXCLUDED.status, attempts = c.attempts + 1, error = NULL, updated_at = now()
    WHERE c.alpaca_account_label = $1::text AND (
        c.status = 'failed'
        OR (c.status = 'started' AND c.updated_at < now() - make_interval(secs => $10::float8))
    )
RETURNING c.attempts"""

_FINISH_CONTROL_ACTION_SQL = """
UPDATE control_actions
SET status = $3::text, result = $4::text::jsonb, error = $5::text, updated_at = now()
WHERE alpaca_account_label = $1::text AND command_id = $2::text"""


def _execution_params(row: ExecutionRow) -> tuple[Any, ...]:
    """$1..$13 of every statement that writes an execution row, in their order."""
    return (
        row.account_label,
        row.client_order_id,
        row.alpaca_order_id,
        row.symbol,
        row.side,
        row.order_type,
        row.time_in_force,
        row.submitted_qty,
        row.filled_qty,
        row.avg_fill_price,
        row.status,
        row.raw_order,
        row.last_event_ts,
    )


class Repository:
    """Account-scoped persistence over an asyncpg pool. One instance per worker process."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, dsn: str, pool_size: int = 8) -> Repository:
        """Open an asyncpg pool on `dsn` (`postgresql://...`; a `+asyncpg` suffix is accepted)."""
        pool = await asyncpg.create_pool(
            asyncpg_dsn(dsn),
            min_size=min(2, pool_size),
            max_size=pool_size,
            init=_init_connection,
            reset=_keep_session,
        )
        return cls(pool)

    async def pin_account(self, account_label: str, account_number: str) -> str:
        """The broker account number pinned to the label: `account_number` if none was."""
        pinned = await self._pool.fetchval(_PIN_ACCOUNT_SQL, account_label, account_number)
        return str(pinned)

    async def claim_control_action(
        self,
        account_label: str,
        command_id: str,
        *,
        kind: str,
        action: str,
        scope: str,
        operator: str,
        reason: str,
        issued_at: datetime,
        status: str,
        stale_after_seconds: float,
    ) -> int | None:
        """The attempt number when this call claimed the (account, command) action, else None
        (done already, or being done)."""
        attempts = await self._pool.fetchval(
            _CLAIM_CONTROL_ACTION_SQL,
            account_label,
            command_id,
            kind,
            action,
            scope,
            operator,
            reason,
            issued_at,
            status,
            stale_after_seconds,
        )
        return None if attempts is None else int(attempts)

    async def finish_control_action(
        self,
        account_label: str,
        command_id: str,
        status: str,
        result: Mapping[str, Any] | None,
        error: str | None,
    ) -> None:
        await self._pool.execute(
            _FINISH_CONTROL_ACTION_SQL,
            account_label,
            command_id,
            status,
            None if result is None else json.dumps(result, default=str),
            error,
        )

    async def control_actions(self, account_label: str) -> list[dict[str, Any]]:
        rows = await self._pool.fetch(
            "SELECT command_id, kind, action, scope, operator, reason, issued_at, status, "
            "attempts, result, error, updated_at FROM control_actions "
            "WHERE alpaca_account_label = $1::text ORDER BY id",
            account_label,
        )
        return [dict(r) for r in rows]

    async def close(self) -> None:
        """Close the pool (waits for connections in use to be released)."""
        await self._pool.close()

    async def ping(self) -> None:
        """`SELECT 1` on the pool: the readiness probe of Postgres."""
        await self._pool.fetchval("SELECT 1")

    # ---- decisions

    async def upsert_decisions(self, rows: Sequence[DecisionRow]) -> None:
        """Insert decisions in one round trip; a known (account, hash) only moves its status up."""
        if not rows:
            return
        batch = _dedupe_decisions(rows)
        await self._pool.execute(
            _UPSERT_DECISIONS,
            [r.account_label for r in batch],
            [r.decision_hash for r in batch],
            [r.strategy_id for r in batch],
            [r.symbol for r in batch],
            [r.timeframe for r in batch],
            [r.action for r in batch],
            [r.event_ts for r in batch],
            [r.status for r in batch],
            [r.qty for r in batch],
            [r.notional for r in batch],
            [r.price for r in batch],
            [r.confidence for r in batch],
            [dumps(list(r.rejection_reasons)) for r in batch],
            [dumps(r.decision_json) for r in batch],
        )

    async def set_decision_status(
        self,
        account: str,
        decision_hash: str,
        status: str,
        reasons: Sequence[str] | None = None,
    ) -> bool:
        """Advance one decision's status (never backwards, never out of a terminal one).

        `reasons` (risk rejections) replace the stored ones when given. True if it changed.
        """
        result = await self._pool.execute(
            _SET_DECISION_STATUS,
            account,
            decision_hash,
            status,
            list(reasons) if reasons is not None else None,
            decision_rank(status),
        )
        return _count(result) > 0

    async def decisions_pending(
        self,
        account: str,
        older_than: datetime,
        statuses: Sequence[str] = ("planned", "submitting"),
        limit: int = 1000,
    ) -> list[PendingDecision]:
        """Decisions of `account` in `statuses` persisted before `older_than` (oldest first)."""
        records = await self._pool.fetch(
            _DECISIONS_PENDING, account, list(statuses), older_than, limit
        )
        return [PendingDecision(**dict(r)) for r in records]

    # ---- executions

    async def upsert_execution(self, row: ExecutionRow) -> int:
        """Insert or merge the execution by (account, client_order_id); returns its id.

        Links the decision (same account, hash = client order id), mirrors the status to it,
        and late-links this account's unlinked order events of the same order, folding the
        most advanced of them into the execution.
        """
        execution_id = await self._upsert_execution(_UPSERT_EXECUTION_AND_MIRROR, row)
        assert execution_id is not None  # an upsert always returns its row
        return execution_id

    async def upsert_decided_execution(self, row: ExecutionRow) -> int | None:
        """`upsert_execution` if the order's decision row exists; else None, nothing written."""
        return await self._upsert_execution(_UPSERT_DECIDED_EXECUTION_AND_MIRROR, row)

    async def _upsert_execution(self, sql: str, row: ExecutionRow) -> int | None:
        async with self._pool.acquire() as conn:
            record = await conn.fetchrow(
                sql,
                *_execution_params(row),
                execution_rank(row.status),
            )
            if record is None:
                return None
            execution_id = int(record["id"])
            if record["unlinked_events"]:
                async with conn.transaction():
                    await self._late_link(conn, row, execution_id, record["trade_decision_id"])
            return execution_id

    async def _late_link(
        self, conn: asyncpg.Connection, row: ExecutionRow, execution_id: int, decision_id: Any
    ) -> None:
        linked = await conn.fetch(
            _LINK_EVENTS,
            execution_id,
            decision_id,
            row.account_label,
            row.client_order_id,
            row.alpaca_order_id,
        )
        best = _most_advanced(linked)
        if best is None:
            return
        update = OrderUpdateRow(
            account_label=row.account_label,
            status=best["status"],
            event_ts=best["event_ts"],
            alpaca_order_id=best["alpaca_order_id"],
            filled_qty=best["filled_qty"],
            filled_avg_price=best["filled_avg_price"],
        )
        await self._apply(conn, _APPLY_BY_ID, update, execution_id)

    async def apply_order_update(self, update: OrderUpdateRow) -> ApplyResult:
        """Fold a broker order state into this account's execution, forwards only.

        Matches (account AND alpaca_order_id) or (account AND client_order_id), preferring the
        Alpaca id. Terminal stays terminal, `filled_qty` never decreases, the status only rises
        in rank; the new status is mirrored to the decision. One SQL statement.
        """
        if update.alpaca_order_id is None and update.client_order_id is None:
            raise ValueError("order update without alpaca_order_id or client_order_id")
        async with self._pool.acquire() as conn:
            return await self._apply(conn, _APPLY_BY_ORDER, update, update.client_order_id)

    async def _apply(
        self, conn: asyncpg.Connection, sql: str, update: OrderUpdateRow, key: object
    ) -> ApplyResult:
        decision_status = decision_status_for(update.status)
        record = await conn.fetchrow(
            sql,
            update.account_label,
            update.alpaca_order_id,
            key,
            execution_rank(update.status),
            update.status,
            update.filled_qty,
            update.filled_avg_price,
            update.raw_order,
            update.event_ts,
            decision_status,
            decision_rank(decision_status),
        )
        if record is None:
            return ApplyResult(ApplyOutcome.not_found)
        if record["overfill"]:
            await conn.execute(
                _RECORD_REFUSAL,
                update.account_label,
                record["target_id"],
                update.alpaca_order_id,
                update.client_order_id,
                OVERFILL,
                record["order_qty"],
                update.filled_qty,
                update.status,
                update.event_ts,
            )
            return ApplyResult(
                ApplyOutcome.overfill,
                record["target_id"],
                record["old_status"],
                record["old_filled"],
            )
        if record["updated_id"] is None:
            return ApplyResult(
                ApplyOutcome.stale, record["target_id"], record["old_status"], record["old_filled"]
            )
        return ApplyResult(
            ApplyOutcome.applied, record["updated_id"], record["new_status"], record["new_filled"]
        )

    async def append_order_events(self, rows: Sequence[OrderEventRow]) -> int:
        """Store order events in one round trip, linking each to its account's execution (or
        decision) when known; duplicates by fingerprint or source coordinates are skipped.
        Returns how many rows were inserted."""
        if not rows:
            return 0
        result = await self._pool.execute(
            _APPEND_EVENTS,
            [r.event_fingerprint for r in rows],
            [r.source_topic for r in rows],
            [r.source_partition for r in rows],
            [r.source_offset for r in rows],
            [r.account_label for r in rows],
            [r.alpaca_order_id for r in rows],
            [r.client_order_id for r in rows],
            [r.symbol for r in rows],
            [r.event_type for r in rows],
            [r.status for r in rows],
            [r.event_ts for r in rows],
            [r.execution_id_alpaca for r in rows],
            [r.qty for r in rows],
            [r.price for r in rows],
            [r.filled_qty for r in rows],
            [r.filled_avg_price for r in rows],
            [dumps(r.raw) for r in rows],
        )
        return _count(result)

    # ---- attribution of v1 order events (across accounts: the answer is the account)

    async def order_owners(
        self, client_order_id: str | None, alpaca_order_id: str | None
    ) -> list[str]:
        """Accounts whose decisions or executions name this order (by client order id when
        given, else by Alpaca order id); more than one means the evidence is ambiguous."""
        records = await self._pool.fetch(_ORDER_OWNERS, client_order_id, alpaca_order_id)
        return [r["label"] for r in records]

    async def hold_unattributed(self, row: HeldEventRow) -> bool:
        """Keep an event no account could be found for, under no account; False if held before."""
        result = await self._pool.execute(
            _HOLD_EVENT,
            row.event_fingerprint,
            row.source_topic,
            row.source_partition,
            row.source_offset,
            row.alpaca_order_id,
            row.client_order_id,
            row.symbol,
            row.event_type,
            row.event_ts,
            dict(row.envelope),  # a jsonb parameter: the pool's codec encodes it
        )
        return _count(result) > 0

    async def held_with_owners(self, limit: int = 500) -> list[HeldEventRow]:
        """The oldest held events, each with the accounts that own its order by now."""
        records = await self._pool.fetch(_HELD_WITH_OWNERS, limit)
        return [
            HeldEventRow(
                id=r["id"],
                event_fingerprint=r["event_fingerprint"],
                source_topic=r["source_topic"],
                source_partition=r["source_partition"],
                source_offset=r["source_offset"],
                alpaca_order_id=r["alpaca_order_id"],
                client_order_id=r["client_order_id"],
                symbol=r["symbol"],
                event_type=r["event_type"],
                event_ts=r["event_ts"],
                envelope=r["raw"],
                owners=tuple(r["owners"]),
            )
            for r in records
        ]

    async def release_held(self, ids: Sequence[int]) -> int:
        """Forget held events once they were handed to their account (or dead-lettered)."""
        if not ids:
            return 0
        result = await self._pool.execute(
            "DELETE FROM unattributed_order_events WHERE id = ANY($1::bigint[])", list(ids)
        )
        return _count(result)

    async def count_held(self) -> int:
        return int(await self._pool.fetchval("SELECT count(*) FROM unattributed_order_events"))

    async def open_executions(self, account: str) -> list[ExecutionRow]:
        """Executions of `account` not in a terminal status (the reconciler's work list)."""
        records = await self._pool.fetch(_OPEN_EXECUTIONS, account, sorted(EXECUTION_TERMINAL))
        return [_execution(r) for r in records]

    async def get_execution(
        self,
        account: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> ExecutionRow | None:
        """One execution of `account` by client order id or Alpaca order id (Alpaca id wins)."""
        record = await self._pool.fetchrow(
            _GET_EXECUTION, account, client_order_id, alpaca_order_id
        )
        return _execution(record) if record is not None else None

    # ---- broker reconciliation

    async def fill_cursor(self, account: str) -> FillCursorRow | None:
        """The account's broker fill cursor and position baseline; None before the first."""
        record = await self._pool.fetchrow(_GET_FILL_CURSOR, account)
        if record is None:
            return None
        return FillCursorRow(
            account_label=record["account_label"],
            page_token=record["page_token"],
            baseline_positions=_decimals(record["baseline_positions"]),
        )

    async def init_fill_cursor(
        self, account: str, page_token: str | None, baseline: Mapping[str, Decimal]
    ) -> FillCursorRow:
        """Create the account's cursor unless one exists; the cursor in effect."""
        await self._pool.execute(
            _INIT_FILL_CURSOR, account, page_token, {k: str(v) for k, v in baseline.items()}
        )
        cursor = await self.fill_cursor(account)
        assert cursor is not None
        return cursor

    async def advance_fill_cursor(self, account: str, page_token: str) -> None:
        await self._pool.execute(_ADVANCE_FILL_CURSOR, account, page_token)

    async def adopt_external_order(self, row: ExecutionRow) -> int | None:
        """Record a broker order this system did not place as an `external` execution of
        `row.account_label`; its id, or None when the account already has that order."""
        async with self._pool.acquire() as conn:
            execution_id = await conn.fetchval(
                _ADOPT_EXTERNAL,
                *_execution_params(row),
            )
            if execution_id is None:
                return None
            async with conn.transaction():
                await self._late_link(conn, row, int(execution_id), None)
            return int(execution_id)

    async def recent_submissions(
        self, account: str, since: datetime, decided_since: datetime
    ) -> list[SubmissionRow]:
        """`account`'s orders that reached the broker, recorded since `since` (their decision
        rows written since `decided_since`), oldest first."""
        records = await self._pool.fetch(
            _RECENT_SUBMISSIONS, account, sorted(DECISION_RANKS), decided_since, since
        )
        return [
            SubmissionRow(
                decision_hash=r["decision_hash"],
                symbol=r["symbol"],
                side=r["side"],
                at=r["at"],
                notional=Decimal(r["notional"]),
            )
            for r in records
        ]

    async def decision_exists(self, account: str, decision_hash: str) -> bool:
        return bool(await self._pool.fetchval(_DECISION_EXISTS, account, decision_hash))

    async def implied_positions(self, account: str) -> dict[str, Decimal]:
        """Symbol → signed quantity the account's executions have filled (buys - sells)."""
        records = await self._pool.fetch(_IMPLIED_POSITIONS, account)
        return {r["symbol"]: Decimal(r["qty"]) for r in records}

    # ---- cursors, snapshots, catalogue

    async def upsert_cursor(
        self, source: str, account: str, ts: datetime, symbol: str | None, seq: int | None
    ) -> None:
        """Set the keyset cursor (ts, symbol, seq) of one (source, account) reader."""
        await self._pool.execute(_UPSERT_CURSOR, source, account, ts, symbol, seq)

    async def get_cursor(self, source: str, account: str) -> CursorRow | None:
        """The (source, account) cursor, or None when that reader never committed one."""
        record = await self._pool.fetchrow(_GET_CURSOR, source, account)
        if record is None:
            return None
        return CursorRow(
            source=record["source"],
            account_label=record["account_label"],
            cursor_ts=record["cursor_ts"],
            cursor_symbol=record["cursor_symbol"],
            cursor_seq=record["cursor_seq"],
            updated_at=record["updated_at"],
        )

    async def insert_position_snapshot(self, row: PositionSnapshotRow) -> int:
        """Append one account snapshot; returns its id."""
        snapshot_id = await self._pool.fetchval(
            _INSERT_SNAPSHOT,
            row.account_label,
            row.as_of,
            row.equity,
            row.cash,
            row.buying_power,
            row.positions,
        )
        return int(snapshot_id)

    async def latest_position_snapshot(self, account: str) -> PositionSnapshotRow | None:
        """The newest snapshot (by `as_of`) of `account`, or None."""
        record = await self._pool.fetchrow(_LATEST_SNAPSHOT, account)
        if record is None:
            return None
        return PositionSnapshotRow(
            account_label=record["alpaca_account_label"],
            as_of=record["as_of"],
            equity=record["equity"],
            cash=record["cash"],
            buying_power=record["buying_power"],
            positions=record["positions"],
        )

    async def upsert_strategies(self, rows: Sequence[StrategyRow]) -> None:
        """Mirror the strategy catalogue into `strategies` (insert or overwrite by id)."""
        if not rows:
            return
        await self._pool.execute(
            _UPSERT_STRATEGIES,
            [r.id for r in rows],
            [r.name for r in rows],
            [r.description for r in rows],
            [r.strategy_type for r in rows],
            [r.version for r in rows],
            [r.enabled for r in rows],
            [r.base_timeframe for r in rows],
            [dumps(list(r.universe)) for r in rows],
            [dumps(r.params) for r in rows],
        )


# ---------------------------------------------------------------------------------------------


def _dedupe_decisions(rows: Sequence[DecisionRow]) -> list[DecisionRow]:
    """One row per (account, hash), the most advanced status winning: Postgres refuses to
    update the same row twice in one `ON CONFLICT DO UPDATE`."""
    best: dict[tuple[str, str], DecisionRow] = {}
    for row in rows:
        key = (row.account_label, row.decision_hash)
        kept = best.get(key)
        if kept is None or decision_rank(row.status) > decision_rank(kept.status):
            best[key] = row
    return list(best.values())


def _most_advanced(events: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The event that tells the most: highest status rank, then largest fill, then latest."""
    best: Mapping[str, Any] | None = None
    best_key: tuple[int, Decimal, float] | None = None
    for event in events:
        if event["status"] is None:
            continue
        ts = event["event_ts"]
        key = (
            execution_rank(event["status"]),
            event["filled_qty"] if event["filled_qty"] is not None else Decimal(-1),
            ts.timestamp() if ts is not None else 0.0,
        )
        if best_key is None or key > best_key:
            best, best_key = event, key
    return best


def _decimals(value: Any) -> dict[str, Decimal]:
    if isinstance(value, str):
        value = json.loads(value)
    return {str(k): Decimal(str(v)) for k, v in (value or {}).items()}


def _execution(record: Mapping[str, Any]) -> ExecutionRow:
    return ExecutionRow(
        id=record["id"],
        trade_decision_id=record["trade_decision_id"],
        account_label=record["alpaca_account_label"],
        client_order_id=record["client_order_id"],
        alpaca_order_id=record["alpaca_order_id"],
        symbol=record["symbol"],
        side=record["side"],
        order_type=record["order_type"],
        time_in_force=record["time_in_force"],
        submitted_qty=record["submitted_qty"],
        filled_qty=record["filled_qty"],
        avg_fill_price=record["avg_fill_price"],
        status=record["status"],
        raw_order=record["raw_order"],
        last_event_ts=record["last_event_ts"],
    )
