"""`faust -A streams.app accounts [--check]`: the execution lanes, and a configuration check.

`accounts` lists every account (label, mode, enabled, broker host; never a secret) and where the
list came from. `accounts --check` validates the whole configuration (the active lanes and an
inactive registry, referenced files) and exits 1 printing every error. Neither starts a worker,
connects to Kafka, nor calls the broker.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar, NoReturn

from faust.cli import AppCommand, option

from streams.app import app, settings
from streams.domain import secrets
from streams.domain.accounts import AccountConfigError, AccountRegistry, check_configuration
from streams.domain.accounts import load_registry as load_account_registry

EXIT_OK = 0
EXIT_INVALID = 1


class InlineAppCommand(AppCommand):
    """An app command run inline: no faust Worker, so no broker, web server or tables start."""

    abstract: ClassVar[bool] = True

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        code = asyncio.run(self.run(*self.args, *args, **{**self.kwargs, **kwargs}))
        raise SystemExit(code or EXIT_OK)


def _rows(registry: AccountRegistry) -> list[list[str]]:
    return [
        [a.label, a.mode.value, "yes" if a.enabled else "no", a.broker_host]
        for a in registry.accounts
    ]


def _print_registry(cmd: AppCommand, registry: AccountRegistry) -> None:
    if cmd.json:
        cmd.say(json.dumps([a.public_view() for a in registry.accounts]))
        return
    table = cmd.tabulate(
        _rows(registry),
        headers=["label", "mode", "enabled", "broker host"],
        title="Accounts",
    )
    cmd.say(secrets.scrub(table))
    lanes = ", ".join(a.label for a in registry.enabled()) or "none"
    cmd.say(f"source: {registry.source}; lanes: {lanes}")


def _list(cmd: AppCommand) -> int:
    try:
        registry = load_account_registry(settings, strict=False)
    except AccountConfigError as exc:
        for error in exc.errors:
            cmd.say(f"error: {error}", file=cmd.stderr)
        return EXIT_INVALID
    _print_registry(cmd, registry)
    for warning in registry.warnings:
        cmd.say(f"warning: {secrets.scrub(warning)}", file=cmd.stderr)
    return EXIT_OK


def _check(cmd: AppCommand) -> int:
    report = check_configuration(settings)
    for warning in report.warnings:
        cmd.say(f"warning: {secrets.scrub(warning)}", file=cmd.stderr)
    for error in report.errors:
        cmd.say(f"error: {secrets.scrub(error)}", file=cmd.stderr)
    if not report.ok or report.registry is None:
        cmd.say(f"configuration invalid: {len(report.errors)} error(s)", file=cmd.stderr)
        return EXIT_INVALID
    _print_registry(cmd, report.registry)
    cmd.say("configuration OK")
    return EXIT_OK


@app.command(
    option(
        "--check",
        is_flag=True,
        default=False,
        help="Validate the whole configuration; exit 1 printing every error.",
    ),
    base=InlineAppCommand,
)
async def accounts(self: AppCommand, check: bool) -> int:
    """List the trading accounts (lanes): label, mode, enabled, broker host. Never secrets."""
    return _check(self) if check else _list(self)
