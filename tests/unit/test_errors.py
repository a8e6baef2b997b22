"""The one error policy: what is transient, what is poison, bounded retries, guarded ticks."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import errors as kafka_errors

from streams.broker.errors import BrokerError, ErrorClass
from streams.errors import TASK_ERRORS, ErrorKind, classify, guarded, reason_code, retry


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(), ErrorKind.transient),
        (ConnectionResetError(), ErrorKind.transient),
        (TimeoutError(), ErrorKind.transient),
        (asyncpg.exceptions.AdminShutdownError("shutdown"), ErrorKind.transient),
        (asyncpg.exceptions.TooManyConnectionsError("too many"), ErrorKind.transient),
        (asyncpg.exceptions.SerializationError("retry"), ErrorKind.transient),
        (asyncpg.exceptions.ConnectionDoesNotExistError("gone"), ErrorKind.transient),
        (asyncpg.exceptions.CharacterNotInRepertoireError("nul"), ErrorKind.poison),
        (asyncpg.exceptions.UntranslatableCharacterError("\\u0000"), ErrorKind.poison),
        (asyncpg.exceptions.UniqueViolationError("dup"), ErrorKind.poison),
        (asyncpg.exceptions.NumericValueOutOfRangeError("big"), ErrorKind.poison),
        (kafka_errors.KafkaConnectionError(), ErrorKind.transient),
        (kafka_errors.KafkaTimeoutError(), ErrorKind.transient),
        (kafka_errors.NotLeaderForPartitionError(), ErrorKind.transient),
        (kafka_errors.MessageSizeTooLargeError(), ErrorKind.poison),
        (BrokerError(ErrorClass.server, 503), ErrorKind.transient),
        (BrokerError(ErrorClass.gateway_timeout, 504), ErrorKind.transient),
        (BrokerError(ErrorClass.rate_limit, 429), ErrorKind.transient),
        (BrokerError(ErrorClass.timeout), ErrorKind.transient),
        (BrokerError(ErrorClass.rejected, 422, 40010001), ErrorKind.poison),
        (BrokerError(ErrorClass.insufficient, 403, 40310000), ErrorKind.poison),
    ],
)
def test_classification(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc) is kind


def test_reason_code_is_the_sqlstate() -> None:
    assert reason_code(asyncpg.exceptions.CharacterNotInRepertoireError("x")) == "22021"
    assert reason_code(ValueError("x")) == "ValueError"


async def test_retry_is_bounded_and_never_retries_poison() -> None:
    calls: list[int] = []

    async def down() -> None:
        calls.append(1)
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        await retry(down, "down", attempts=3, first_delay=0.001)
    assert len(calls) == 3

    calls.clear()

    async def poison() -> None:
        calls.append(1)
        raise asyncpg.exceptions.UniqueViolationError("dup")

    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await retry(poison, "poison", attempts=3, first_delay=0.001)
    assert len(calls) == 1


async def test_a_guarded_tick_counts_and_swallows_its_failure() -> None:
    before = TASK_ERRORS.labels(task="t-test")._value.get()

    async def boom() -> None:
        raise RuntimeError("bug")

    await guarded("t-test", boom)  # does not raise
    assert TASK_ERRORS.labels(task="t-test")._value.get() == before + 1


def test_database_unreachable_is_postgres_not_the_broker_nor_the_record() -> None:
    import asyncpg

    from streams.broker.errors import BrokerError, ErrorClass
    from streams.errors import is_database_unreachable

    assert is_database_unreachable(ConnectionRefusedError(111, "refused"))
    assert is_database_unreachable(asyncpg.InterfaceError("connection is closed"))
    assert is_database_unreachable(asyncpg.exceptions.AdminShutdownError("shutdown"))
    assert not is_database_unreachable(asyncpg.exceptions.CharacterNotInRepertoireError("NUL"))
    assert not is_database_unreachable(ValueError("bad value"))
    assert not is_database_unreachable(BrokerError(ErrorClass.timeout, message="POST timed out"))


async def test_reopened_for_ever_counts_each_failure_reopens_and_lets_cancellation_through() -> (
    None
):
    import asyncio

    from streams.errors import reopened_for_ever

    opened = 0
    blocked = asyncio.Event()

    async def reader() -> None:
        nonlocal opened
        opened += 1
        if opened <= 2:
            raise ConnectionError("broker gone")
        blocked.set()
        await asyncio.Event().wait()  # follows the topic until cancelled

    before = TASK_ERRORS.labels(task="reader-test")._value.get()
    task = asyncio.create_task(reopened_for_ever("reader-test", reader, reopen_after=0.01))
    await asyncio.wait_for(blocked.wait(), 2)
    assert opened == 3
    assert TASK_ERRORS.labels(task="reader-test")._value.get() == before + 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
