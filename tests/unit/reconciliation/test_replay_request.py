"""The fill replay a reconcile request asks for retries a transient failure (e.g. the account's
request budget spent by the reconcile pass that starts with it) within the account's budget."""

from __future__ import annotations

from typing import Any

from streams.broker.errors import BrokerError, ErrorClass
from streams.observability.status import StatusBoard
from streams.reconciliation.fills import ReplayReport
from streams.reconciliation.service import ReconciliationService
from streams.settings import Settings


def service(**settings: Any) -> ReconciliationService:
    return ReconciliationService(
        Settings(**settings),  # type: ignore[call-arg]
        None,  # type: ignore[arg-type]
        repositories=None,  # type: ignore[arg-type]
        brokers=None,  # type: ignore[arg-type]
        board=StatusBoard(),
        dead_letters=None,  # type: ignore[arg-type]
        owned_accounts=lambda: ["alpha"],
        trading_state=None,  # type: ignore[arg-type]
    )


async def test_a_rate_limited_replay_is_tried_again() -> None:
    svc = service()
    answers: list[BaseException | ReplayReport] = [
        BrokerError(ErrorClass.rate_limit, message="local request budget exhausted"),
        ReplayReport("alpha"),
    ]
    calls: list[str] = []

    async def replay(label: str, trigger: str) -> ReplayReport:
        calls.append(trigger)
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    svc.replay_fills = replay  # type: ignore[method-assign]
    assert isinstance(await svc._replay_guarded("alpha"), ReplayReport)
    assert calls == ["reconcile_request", "reconcile_request"]


async def test_a_replay_refused_for_good_is_not_tried_again() -> None:
    svc = service()
    calls: list[str] = []

    async def replay(label: str, trigger: str) -> ReplayReport:
        calls.append(trigger)
        raise BrokerError(ErrorClass.forbidden, 403, message="forbidden")

    svc.replay_fills = replay  # type: ignore[method-assign]
    assert await svc._replay_guarded("alpha") is None
    assert calls == ["reconcile_request"]
