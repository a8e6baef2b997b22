"""The one I/O error policy of the worker: Postgres, Kafka and broker errors, classified once.

- **transient**: the call may succeed later and nothing is wrong with the data: connection
  refused/reset, timeouts, Postgres admin shutdown or too many connections, serialization
  failures, retriable Kafka errors, broker 5xx/504/429 and timeouts. Retried within bounds, then
  left to the caller's own backoff (a parked decision, a redelivered batch).
- **poison**: the record itself is refused: Postgres data exceptions (class 22, e.g. a NUL
  character) and integrity violations (class 23), a record Kafka will never take (too large),
  definitive broker 4xx refusals. Never retried; only that record is rejected, quarantined or
  dead-lettered, and nothing else (no circuit, no other account) is affected.

Anything unknown is treated as transient where retrying is harmless and bounded.

Also here: `guarded` (a timer or task body that logs and counts its failures instead of letting
faust crash the worker) and `exit_worker` (stop the process loudly where in-process recovery is
unsafe, so the orchestrator restarts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TypeVar

import asyncpg
from aiokafka import errors as kafka_errors
from prometheus_client import Counter

from streams.broker.errors import AMBIGUOUS, BrokerError, ErrorClass

log = logging.getLogger(__name__)

T = TypeVar("T")

TASK_ERRORS = Counter(
    "torghut_task_errors_total", "Exceptions caught in a guarded timer or task.", ["task"]
)
WORKER_EXITS = Counter(
    "torghut_worker_exits_total",
    "Deliberate worker exits (unsafe to recover in-process).",
    ["reason"],
)

EX_SOFTWARE = 70  # sysexits.h: internal software error; the orchestrator restarts the pod


class ErrorKind(StrEnum):
    transient = "transient"
    poison = "poison"


# SQLSTATE classes (first two characters) of transient Postgres failures.
_TRANSIENT_SQLSTATE_CLASSES = frozenset(
    {
        "08",  # connection exception
        "40",  # transaction rollback (serialization failure, deadlock)
        "53",  # insufficient resources (too many connections, disk full)
        "57",  # operator intervention (admin shutdown, cannot connect now, query canceled)
        "58",  # system error (I/O)
        "XX",  # internal error
    }
)


# Kafka refusals of one record (every other Kafka error is about the cluster: transient).
_KAFKA_POISON = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidMessageError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
)


def sqlstate(exc: BaseException) -> str | None:
    """The Postgres SQLSTATE of an asyncpg server error, else None."""
    code = getattr(exc, "sqlstate", None)
    return code if isinstance(code, str) and len(code) == 5 else None


def classify(exc: BaseException) -> ErrorKind:
    """Transient or poison, for any exception a Postgres, Kafka or broker call raised."""
    if isinstance(exc, BrokerError):
        if exc.kind in AMBIGUOUS or exc.kind is ErrorClass.rate_limit:
            return ErrorKind.transient
        return ErrorKind.poison
    if isinstance(exc, asyncpg.PostgresError):
        code = sqlstate(exc) or ""
        return ErrorKind.transient if code[:2] in _TRANSIENT_SQLSTATE_CLASSES else ErrorKind.poison
    if isinstance(exc, UnicodeError | ValueError | TypeError):
        return ErrorKind.poison  # a value that cannot be encoded at all
    if isinstance(exc, _KAFKA_POISON):
        return ErrorKind.poison
    return ErrorKind.transient  # OSError, TimeoutError, InterfaceError, anything unknown


def is_infrastructure(exc: BaseException) -> bool:
    """Known to be about the infrastructure (not the record, not a bug): safe to wait out
    without a bound on attempts (the caller still bounds the time)."""
    if isinstance(exc, asyncpg.PostgresError | BrokerError | UnicodeError | ValueError | TypeError):
        return is_transient(exc)
    if isinstance(exc, kafka_errors.KafkaError):
        return is_transient(exc)
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError)


def is_database_unreachable(exc: BaseException) -> bool:
    """Postgres cannot be reached or is refusing work for now (not a broker error, not the
    record): the `database_unavailable` health problem."""
    if isinstance(exc, BrokerError):
        return False
    if isinstance(exc, asyncpg.PostgresError):
        return is_transient(exc)
    return isinstance(exc, OSError | asyncpg.InterfaceError)


def is_transient(exc: BaseException) -> bool:
    return classify(exc) is ErrorKind.transient


def is_poison(exc: BaseException) -> bool:
    return classify(exc) is ErrorKind.poison


def reason_code(exc: BaseException) -> str:
    """A short, stable code for a poison error: the SQLSTATE, else the exception's name."""
    return sqlstate(exc) or type(exc).__name__


async def retry(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    attempts: int = 3,
    first_delay: float = 0.2,
    max_delay: float = 2.0,
    deadline: float | None = None,
) -> T:
    """`await call()`, retried while it fails transiently: at most `attempts` tries and, when
    given, never past `deadline` (loop time). Poison errors and the last failure are raised."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except Exception as exc:
            last_try = attempt >= attempts or (
                deadline is not None and loop.time() + delay >= deadline
            )
            if is_poison(exc) or last_try:
                raise
            log.warning(
                "%s failed (%s), retry %d/%d in %.1fs",
                what,
                type(exc).__name__,
                attempt,
                attempts - 1,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)
    raise AssertionError("unreachable")  # pragma: no cover


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    what: str,
    *,
    first_delay: float = 0.2,
    max_delay: float = 5.0,
    attempts: int | None = None,
    deadline: float | None = None,
) -> T:
    """`await call()`, retried with backoff while it fails for the infrastructure (forever by
    default): the order path, which waits out an outage rather than skip a record.

    With `deadline` (loop time) nothing waits past it: each attempt is cut off at the deadline
    (`TimeoutError`, itself transient) and no retry starts that would sleep beyond it; the last
    failure is raised."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            if deadline is None:
                return await call()
            return await asyncio.wait_for(call(), timeout=max(0.0, deadline - loop.time()))
        except Exception as exc:
            out_of_time = deadline is not None and loop.time() + delay >= deadline
            if (
                not is_infrastructure(exc)
                or (attempts is not None and attempt >= attempts)
                or out_of_time
            ):
                raise
            log.warning(
                "%s failed (%s), retrying in %.1fs",
                what,
                type(exc).__name__,
                delay,
                extra={"attempt": attempt},
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay)


async def guarded(task: str, body: Callable[[], Awaitable[object]]) -> None:
    """Run one tick of a timer or task: an exception is logged and counted, never raised (faust
    turns an exception in a timer into a crash of the whole app). Cancellation goes through."""
    try:
        await body()
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # the point of the guard
        TASK_ERRORS.labels(task=task).inc()
        log.exception("%s failed (%s); it runs again at its next tick", task, type(exc).__name__)


async def reopened_for_ever(
    task: str, run: Callable[[], Awaitable[object]], reopen_after: float = 2.0
) -> None:
    """Run a long-lived reader (its own Kafka consumer) for ever: a failure is logged and
    counted like a guarded tick, and the reader opened again after `reopen_after` seconds."""
    while True:
        await guarded(task, run)
        await asyncio.sleep(reopen_after)


def exit_worker(reason: str, code: int = EX_SOFTWARE) -> None:
    """Stop the process now, non-zero, without acking or committing anything more: used where
    recovering in-process is unsafe (faust could commit past an unfinished record) or would
    hang. The orchestrator restarts the pod; the records come back from the last commit."""
    WORKER_EXITS.labels(reason=reason.split(":", 1)[0]).inc()
    log.critical("worker exiting (code %d): %s", code, reason, extra={"exit_reason": reason})
    print(f"torghut-streams: exiting ({code}): {reason}", file=sys.stderr, flush=True)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):  # exiting anyway
            handler.flush()
    sys.stdout.flush()
    os._exit(code)
