"""`faust -A streams.app db upgrade [--revision R] | downgrade REV | check | current`.

Runs without a faust Worker (no Kafka): the command is plain database work and its exit code
matters (`db check` exits 1 when anything is wrong, naming each problem).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, NoReturn

import click
from faust.cli import AppCommand

from streams.app import settings
from streams.persistence import migrate
from streams.persistence.dbcheck import check_database
from streams.persistence.dsn import database_dsn

ACTIONS = ("upgrade", "downgrade", "check", "current")


class db(AppCommand):  # type: ignore[misc]  # faust is untyped
    """Database schema: upgrade [--revision R] | downgrade REV | check | current."""

    options = [
        click.argument("action", type=click.Choice(ACTIONS)),
        click.argument("target", required=False),
        click.option(
            "--revision",
            default=None,
            help="Revision for upgrade, or that check expects (default: head).",
        ),
    ]

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        options = {**self.kwargs, **kwargs}
        revision = options.get("revision") or options.get("target")
        raise SystemExit(asyncio.run(run(str(options["action"]), revision)))


async def run(action: str, revision: str | None) -> int:
    """Execute one `db` action against DATABASE_URL; the process exit code."""
    dsn = database_dsn(settings)
    if action == "upgrade":
        await migrate.upgrade(dsn, revision or "head")
        click.echo(f"database at {', '.join(await migrate.current(dsn))}")
        return 0
    if action == "downgrade":
        if not revision:
            click.echo("db downgrade needs a target revision (e.g. 0002)", err=True)
            return 2
        await migrate.downgrade(dsn, revision)
        click.echo(f"database at {', '.join(await migrate.current(dsn)) or 'base'}")
        return 0
    if action == "current":
        current = ", ".join(await migrate.current(dsn)) or "none"
        click.echo(f"database: {current}; head: {', '.join(migrate.heads())}")
        return 0
    return await check(dsn, revision)


async def check(dsn: str, revision: str | None = None) -> int:
    result = await check_database(
        dsn, multi_account_enabled=settings.multi_account_enabled, target=revision
    )
    for note in result.notes:
        click.echo(f"note: {note}")
    for problem in result.problems:
        click.echo(f"PROBLEM: {problem}", file=sys.stdout)
    if result.ok:
        click.echo(f"ok: database at {', '.join(result.current)}; schema matches the models")
        return 0
    click.echo(f"db check failed: {len(result.problems)} problem(s)", err=True)
    return 1
