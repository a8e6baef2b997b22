"""Replay scope: which accounts a replayed TA signal may reach. Pure, no I/O.

`faust -A streams.app replay` publishes historical signals onto the signals topic with two
headers. The signals agent honours them for a record that carries them:
- it does not consult nor advance the live dedupe watermark (history is older than it);
- it fans the intents out only to `replay_targets(scope, accounts)`: the listed accounts that are
  enabled and in paper mode. A live account is never a replay target, whatever the header says.
A record whose replay headers are malformed is a dead letter (`ValueError` from
`replay_scope_from_headers`), never a live signal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

REPLAY_ID_HEADER = "torghut-replay-id"
REPLAY_ACCOUNTS_HEADER = "torghut-replay-accounts"

Headers = Mapping[str, bytes] | Sequence[tuple[str, bytes]] | None


@dataclass(frozen=True)
class ReplayScope:
    replay_id: str
    accounts: tuple[str, ...]

    def headers(self) -> list[tuple[str, bytes]]:
        return [
            (REPLAY_ID_HEADER, self.replay_id.encode()),
            (REPLAY_ACCOUNTS_HEADER, ",".join(self.accounts).encode()),
        ]


class LaneAccount(Protocol):
    """What replay targeting needs of an account (`streams.domain.accounts.Account` fits).

    Its mode is read from `is_live`; an account object without it counts as live (never a
    replay target).
    """

    @property
    def label(self) -> str: ...

    @property
    def enabled(self) -> bool: ...


def _is_live(account: LaneAccount) -> bool:
    return bool(getattr(account, "is_live", True))


def _header_items(headers: Headers) -> list[tuple[str, bytes]]:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def replay_scope_from_headers(headers: Headers) -> ReplayScope | None:
    """The replay scope of a record, None for a live record; ValueError when malformed."""
    found = {
        k: v for k, v in _header_items(headers) if k in (REPLAY_ID_HEADER, REPLAY_ACCOUNTS_HEADER)
    }
    if not found:
        return None
    try:
        replay_id = found[REPLAY_ID_HEADER].decode()
        accounts = tuple(a for a in found[REPLAY_ACCOUNTS_HEADER].decode().split(",") if a)
    except (KeyError, UnicodeDecodeError) as exc:
        raise ValueError(f"replay headers incomplete or not UTF-8: {type(exc).__name__}") from None
    if not replay_id or not accounts:
        raise ValueError("replay headers need a replay id and at least one account")
    return ReplayScope(replay_id, accounts)


def replay_targets(scope: ReplayScope, accounts: Iterable[LaneAccount]) -> list[str]:
    """The accounts a replayed signal fans out to: listed, enabled, paper (sorted)."""
    wanted = set(scope.accounts)
    return sorted(a.label for a in accounts if a.label in wanted and a.enabled and not _is_live(a))


def replay_lanes(
    lanes: Iterable[str], scope: ReplayScope, accounts: Iterable[LaneAccount]
) -> tuple[str, ...]:
    """The receiving lanes a replayed signal keeps: those that are replay targets."""
    targets = set(replay_targets(scope, accounts))
    return tuple(lane for lane in lanes if lane in targets)


class ReplayRefused(ValueError):
    """The replay request names an account it must never reach."""


def check_replay_accounts(
    requested: Sequence[str] | None, accounts: Iterable[LaneAccount]
) -> tuple[str, ...]:
    """Accounts a replay targets: the requested ones, else every enabled paper account.

    Refuses (ReplayRefused) a live account, an unknown or disabled one, and an empty result.
    """
    known = {a.label: a for a in accounts}
    if not requested:
        chosen = sorted(label for label, a in known.items() if a.enabled and not _is_live(a))
        if not chosen:
            raise ReplayRefused("no enabled paper account to replay into")
        return tuple(chosen)
    problems: list[str] = []
    for label in requested:
        account = known.get(label)
        if account is None:
            problems.append(f"{label}: unknown account")
        elif _is_live(account):
            problems.append(f"{label}: live account (replay is for paper accounts only)")
        elif not account.enabled:
            problems.append(f"{label}: account is disabled")
    if problems:
        raise ReplayRefused("replay refused: " + "; ".join(problems))
    return tuple(sorted(set(requested)))
