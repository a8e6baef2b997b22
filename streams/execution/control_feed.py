"""Every worker reads the whole compacted control topic, from the beginning, with no group.

A consumer group would split the partitions between workers, and a kill switch must reach every
worker that may run the lane. So each worker assigns itself every partition, replays the
compacted history (the current state), and then follows new commands as they arrive (≈100 ms).
`caught_up` is set once the replay reached the end offsets seen at start: lanes do not submit
before it, so a restart never trades through an engaged switch.

Two kinds share the topic: kill switches (`kill_switch:<scope>`, the `KillSwitchBook`) and
trading states (`trading_state:<scope>`, the `TradingStateBook`).

Fail safe: an undecodable record whose key names a scope engages that scope — a kill switch, or
`halted` for a trading-state key (`undecodable_control_record`) — and is dead-lettered.
`advanced_at` is when the feed last read (or confirmed it is at the end of) the topic: a feed
that stalls after catch-up is noticed (`stale_for`), and past a bound the lanes refuse new
orders (`control_feed_stale`).

A command naming an account the registry does not know (`unknown_account`) never reaches the
book: no switch state exists for a label that is not configured. Received live it is
dead-lettered; met again in the start-up replay (a compacted topic keeps it as the latest
command of its key) it is only logged and counted, so that every restart of every worker does
not dead-letter it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from schemas.codecs import DecodeError, decode_control
from schemas.control import ControlCommand, ControlKind, TradingState
from streams.dlq import DeadLetters
from streams.domain.kill_switch import KillSwitchBook, parse_key
from streams.domain.trading_state import TradingStateBook
from streams.errors import reopened_for_ever

log = logging.getLogger(__name__)

# (command or None for a tombstone, scope, live): `live` is False during the start-up replay.
ChangeListener = Callable[[ControlCommand | None, str, bool], None]
UNDECODABLE = "undecodable_control_record"
STALE = "control_feed_stale"


class ControlFeed:
    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        book: KillSwitchBook,
        *,
        known_accounts: frozenset[str] | None = None,
        dead_letters: DeadLetters | None = None,
        client_id: str = "torghut-control",
        security: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        trading_states: TradingStateBook | None = None,
    ) -> None:
        self.topic = topic
        self.book = book
        self.trading_states = trading_states if trading_states is not None else TradingStateBook()
        self.known_accounts = known_accounts  # None: any valid label (tools and tests)
        self.dead_letters = dead_letters
        self.unknown_accounts = 0
        self.caught_up = asyncio.Event()
        self.errors = 0
        self._clock = clock
        self.advanced_at: float | None = None  # last read (or seen at the end), monotonic
        self.lag = 0  # records behind the end, as of the last check
        self._bootstrap = bootstrap_servers
        self._security = dict(security or {})  # `streams.kafka_security.aiokafka_kwargs`
        self._client_id = client_id
        self._listeners: list[ChangeListener] = []
        self._warned = False

    def subscribe(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    async def run_forever(self, reopen_after: float = 2.0) -> None:
        """`run`, reopened after a broken connection; lanes stay gated only until the first
        catch-up."""
        await reopened_for_ever("control_feed", self.run, reopen_after)

    async def run(self) -> None:
        """Replay, then follow the topic until cancelled."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            client_id=self._client_id,
            group_id=None,  # no group: this consumer gets every partition, never a share
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=100,
            **self._security,
        )
        consumer.subscribe(topics=[self.topic])
        await consumer.start()
        try:
            end: dict[TopicPartition, int] | None = None
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        await self._apply(record)
                if batch:
                    self.advanced_at = self._clock()
                if not self.caught_up.is_set():
                    end = end or await self._end_offsets(consumer)
                    if end is not None and await self._reached(consumer, end):
                        self._mark_caught_up()
                else:
                    await self._check_lag(consumer)
        finally:
            await consumer.stop()

    async def _end_offsets(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int] | None:
        """The end offsets at start (what the replay must reach), once partitions are assigned."""
        assigned = consumer.assignment()
        if not assigned:
            if not self._warned:
                log.info("waiting for the control topic %s", self.topic)
                self._warned = True
            return None
        return dict(await consumer.end_offsets(list(assigned)))

    @staticmethod
    async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
        for tp, offset in end.items():
            if offset > 0 and await consumer.position(tp) < offset:
                return False
        return True

    async def _check_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Records behind the end; at the end, the feed counts as advanced (it is current)."""
        assigned = list(consumer.assignment())
        if not assigned:
            return
        end = await consumer.end_offsets(assigned)
        lag = 0
        for tp in assigned:
            lag += max(0, end[tp] - await consumer.position(tp))
        self.lag = lag
        if lag == 0:
            self.advanced_at = self._clock()

    def is_caught_up(self) -> bool:
        return self.caught_up.is_set()

    def stale_for(self) -> float | None:
        """Seconds since the feed last advanced (None before its first catch-up)."""
        if not self.caught_up.is_set() or self.advanced_at is None:
            return None
        return max(0.0, self._clock() - self.advanced_at)

    def _mark_caught_up(self) -> None:
        if not self.caught_up.is_set():
            log.info(
                "control topic replayed",
                extra={
                    "kill_switches": self.book.as_dict(),
                    "trading_states": self.trading_states.as_dict(),
                },
            )
            self.advanced_at = self._clock()
            self.caught_up.set()

    async def _apply(self, record: ConsumerRecord) -> None:
        live = self.caught_up.is_set()
        if record.value is None:
            parsed = parse_key(record.key)
            if parsed is not None and self._forget(*parsed):
                self._notify(None, parsed[1], live)
            return
        try:
            command = decode_control(record.value)
        except DecodeError as exc:
            await self._undecodable(record, exc, live)
            return
        known = self.known_accounts
        if known is not None and command.account is not None and command.account not in known:
            await self._unknown_account(record, live)
            return
        if self._book_apply(command):
            if command.kind is ControlKind.trading_state:
                what = f"trading state {command.state}"
            else:
                what = f"kill switch {'engaged' if command.engaged else 'released'}"
            log.info(
                "%s for %s",
                what,
                command.scope,
                extra={
                    "reason": command.reason,
                    "operator": command.operator,
                    "command_id": command.command_id,
                    "live": live,
                },
            )
            self._notify(command, command.scope, live)

    def _book_apply(self, command: ControlCommand) -> bool:
        if command.kind is ControlKind.trading_state:
            return self.trading_states.apply(command)
        return self.book.apply(command)

    def _forget(self, kind: ControlKind, scope: str) -> bool:
        if kind is ControlKind.trading_state:
            return self.trading_states.forget(scope)
        return self.book.forget(scope)

    async def _undecodable(self, record: ConsumerRecord, exc: DecodeError, live: bool) -> None:
        """Fail safe: the scope its key names is engaged (what it said is unknown, and it may
        have been an engage); the record is dead-lettered either way."""
        self.errors += 1
        parsed = parse_key(record.key)
        kind, scope = parsed if parsed is not None else (ControlKind.kill_switch, None)
        log.error(
            "undecodable control record%s",
            f"; {kind.value} engaged for {scope}" if scope else " (its key names no scope)",
            extra={"reason": exc.reason, "partition": record.partition, "offset": record.offset},
        )
        command = self._fail_safe_command(scope, kind)
        if command is not None and self._book_apply(command):
            self._notify(command, command.scope, live)
        if self.dead_letters is not None:
            await self.dead_letters.record(record, UNDECODABLE, exc)

    def _fail_safe_command(
        self, scope: str | None, kind: ControlKind = ControlKind.kill_switch
    ) -> ControlCommand | None:
        """The engage an undecodable record's key stands for: all lanes, or one account the
        registry knows (a key naming anything else creates no state); a trading-state key
        stands for `halted`."""
        if scope is None:
            return None
        account = None if scope == "*" else scope
        known = self.known_accounts
        if account is not None and known is not None and account not in known:
            return None
        try:
            return ControlCommand(
                kind=kind,
                account=account,
                engaged=True,
                state=TradingState.halted if kind is ControlKind.trading_state else None,
                operator="torghut-streams",
                reason=UNDECODABLE,
            )
        except ValueError:  # not even a valid label
            return None

    async def _unknown_account(self, record: ConsumerRecord, live: bool) -> None:
        self.unknown_accounts += 1
        log.warning(
            "control command for an account the registry does not know ignored",
            extra={"partition": record.partition, "offset": record.offset, "live": live},
        )
        if live and self.dead_letters is not None:
            await self.dead_letters.record(
                record, "unknown_account", "account: not an account of the registry"
            )

    def _notify(self, command: ControlCommand | None, scope: str, live: bool) -> None:
        for listener in self._listeners:
            try:
                listener(command, scope, live)
            except Exception:  # one listener must not stop the feed
                log.exception("control listener failed")
