"""Operator commands on the compacted control topic:

- `faust -A streams.app kill-switch --account LABEL|--all --on|--cancel|--flatten|--off
  --reason TEXT` (key `kill_switch:<label>` or `kill_switch:*`): `--on` blocks new orders,
  `--cancel` also cancels the account's open orders, `--flatten` also closes its positions
  (each done once, by the worker that owns the lane, audited in `control_actions`);
- `faust -A streams.app trading-state --account LABEL|--all {active,reducing,halted}
  --reason TEXT` (key `trading_state:<scope>`).

Every worker follows that topic and applies a command at once, and it survives restarts
(compaction keeps the latest command per key). Waits for the broker's acknowledgement before
returning. `--account` must name an account of the registry (enabled or not).
"""

from __future__ import annotations

import getpass
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaProducer
from faust.cli import argument, option

from schemas.codecs import encode_control
from schemas.common import LABEL_PATTERN, LABEL_RULE
from schemas.control import (
    ControlCommand,
    KillMode,
    TradingState,
    control_key,
    trading_state_command,
)
from streams.app import app, settings
from streams.domain.accounts import AccountConfigError, load_registry
from streams.kafka_security import aiokafka_kwargs
from streams.ownership import bootstrap_servers


def check_account(account: str, known: Collection[str], command: str = "kill-switch") -> str:
    """`account` when it is a label of the registry; a clear exit otherwise (a command for a
    label that is not configured would create switch state for no lane)."""
    if LABEL_PATTERN.fullmatch(account) is None:
        raise SystemExit(f"{command}: --account must be {LABEL_RULE}")
    if account not in known:
        configured = ", ".join(sorted(known)) or "none"
        raise SystemExit(
            f"{command}: unknown account {account!r}: not in the registry "
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
    mode: KillMode | None = None,
) -> ControlCommand:
    if (account is None) == (not all_accounts):
        raise SystemExit("kill-switch: give exactly one of --account LABEL or --all")
    if mode is not None and engage is False:
        raise SystemExit("kill-switch: --cancel/--flatten engage the switch; not with --off")
    if mode is not None:
        engage = True
    if engage is None:
        raise SystemExit("kill-switch: give --on, --cancel, --flatten or --off")
    if account is not None:
        check_account(account, known)
    return ControlCommand(
        account=None if all_accounts else account,
        engaged=engage,
        mode=mode or KillMode.block,
        operator=operator,
        reason=reason,
    )


def build_state_command(
    account: str | None,
    all_accounts: bool,
    state: str,
    reason: str,
    operator: str,
    known: Collection[str],
) -> ControlCommand:
    if (account is None) == (not all_accounts):
        raise SystemExit("trading-state: give exactly one of --account LABEL or --all")
    try:
        wanted = TradingState(state)
    except ValueError:
        choices = ", ".join(s.value for s in TradingState)
        raise SystemExit(f"trading-state: state must be one of {choices}") from None
    if account is not None:
        check_account(account, known, "trading-state")
    return trading_state_command(wanted, None if all_accounts else account, operator, reason)


def registry_labels(command: str) -> Collection[str]:
    try:
        return load_registry(settings, strict=False).labels
    except AccountConfigError as exc:
        raise SystemExit(f"{command}: {exc}") from None


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
    option("--on/--off", "engage", default=None, help="Engage (block new orders) or release."),
    option(
        "--cancel", "cancel", is_flag=True, default=False, help="Engage and cancel open orders."
    ),
    option(
        "--flatten",
        "flatten",
        is_flag=True,
        default=False,
        help="Engage, cancel open orders and close every position.",
    ),
    option("--reason", type=str, required=True, help="Why (shown in status and logs)."),
    option("--operator", type=str, default=None, help="Who (default: the OS user)."),
)
async def kill_switch(
    self: Any,
    account: str | None,
    all_accounts: bool,
    engage: bool | None,
    cancel: bool,
    flatten: bool,
    reason: str,
    operator: str | None,
) -> None:
    """Engage (block, cancel, flatten) or release a lane's (or every lane's) kill switch."""
    if cancel and flatten:
        raise SystemExit("kill-switch: give one of --cancel or --flatten")
    mode = KillMode.flatten if flatten else KillMode.cancel if cancel else None
    known = registry_labels("kill-switch")
    command = build_command(
        account, all_accounts, engage, reason, operator or getpass.getuser(), known, mode
    )
    await publish(command)
    state = f"engaged ({command.mode.value})" if command.engaged else "released"
    self.say(
        f"kill switch {state} for {command.scope} "
        f"(command {command.command_id}, {settings.control_topic})"
    )


@app.command(
    argument("state", type=str),
    option("--account", type=str, default=None, help="Account label of the lane."),
    option("--all", "all_accounts", is_flag=True, default=False, help="Every lane."),
    option("--reason", type=str, required=True, help="Why (shown in status and logs)."),
    option("--operator", type=str, default=None, help="Who (default: the OS user)."),
)
async def trading_state(
    self: Any,
    state: str,
    account: str | None,
    all_accounts: bool,
    reason: str,
    operator: str | None,
) -> None:
    """Set a lane's (or every lane's) trading state: STATE is active, reducing or halted."""
    known = registry_labels("trading-state")
    command = build_state_command(
        account, all_accounts, state, reason, operator or getpass.getuser(), known
    )
    await publish(command)
    self.say(
        f"trading state {command.state} for {command.scope} "
        f"(command {command.command_id}, {settings.control_topic})"
    )
