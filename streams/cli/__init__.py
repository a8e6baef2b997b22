"""Project commands on the app CLI (`faust -A streams.app <command>`)."""

from streams.cli import (  # noqa: F401
    accounts,
    clickhouse,
    db,
    demo,
    forwarder,
    inspect,
    kill_switch,
    topics,
)
