"""Project commands on the app CLI (`faust -A streams.app <command>`)."""

from streams.cli import topics  # noqa: E402, F401
