"""`faust -A streams.app kill-switch --account LABEL|--all --on|--off --reason TEXT`.

Writes one command to the compacted control topic (key `kill_switch:<label>` or `kill_switch:*`);
every worker follows that topic and applies it at once, and it survives restarts (compaction keeps
the latest command per key). Waits for the broker's acknowledgement before returning. `--account`
must name an account of the registry (enabled or not).
"""

from __future__ import annotations

import getpass
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.cli import option

from schemas.codecs import encode_control
from schemas.common import LABEL_PATTERN, LABEL_RULE
from schemas.control import ControlCommand, control_key
from streams.app import app, settings
from streams.domain.accounts import AccountConfigError, load_registry
from streams.kafka_security import aiokafka_kwargs
from streams.ownership import bootstrap_servers


def check_account(account: str, known: Collection[str]) -> str:
    """`account` when it is a label of the registry; a clear exit otherwise (a command for a
    label that is not configured would create switch state for no lane)."""
    if LABEL_PATTERN.fullmatch(account) is None:
        raise SystemExit(f"kill-switch: --account must be {LABEL_RULE}")
    if account not in known:
        configured = ", ".join(sorted(known)) or "none"
        raise SystemExit(
            f"kill-switch: unknown account {account!r}: not in the registry "
            f"(configured: {configured})"
        )
    return account


def build_command(
    account: str | None,
    all_accounts: bool,
    engage: bool | None,
    reason: str,
    operator: str,
    known: Collection[str],
) -> ControlCommand:
    if (account is None) == (not all_accounts):
        raise SystemExit("kill-switch: give exactly one of --account LABEL or --all")
    if engage is None:
        raise SystemExit("kill-switch: give --on or --off")
    if account is not None:
        check_account(account, known)
    return ControlCommand(
        account=None if all_accounts else account,
        engaged=engage,
        operator=operator,
        reason=reason,
    )


async def publish(command: ControlCommand) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.kafka_brokers),
        acks="all",
        **aiokafka_kwargs(settings),
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.control_topic, value=encode_control(command), key=control_key(command)
        )
    finally:
        await producer.stop()


@app.command(
    option("--account", type=str, default=None, help="Account label of the lane."),
    option("--all", "all_accounts", is_flag=True, default=False, help="Every lane."),
    option("--on/--off", "engage", default=None, help="Engage or release the switch."),
    option("--reason", type=str, required=True, help="Why (shown in status and logs)."),
    option("--operator", type=str, default=None, help="Who (default: the OS user)."),
)
async def kill_switch(
    self: Any,
    account: str | None,
    all_accounts: bool,
    engage: bool | None,
    reason: str,
    operator: str | None,
) -> None:
    """Engage or release a lane's (or every lane's) kill switch through the control topic."""
    try:
        known = load_registry(settings, strict=False).labels
    except AccountConfigError as exc:
        raise SystemExit(f"kill-switch: {exc}") from None
    command = build_command(
        account, all_accounts, engage, reason, operator or getpass.getuser(), known
    )
    await publish(command)
    state = "engaged" if command.engaged else "released"
    self.say(f"kill switch {state} for {command.scope} ({settings.control_topic})")
