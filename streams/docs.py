"""The README's configuration table, generated from the settings model.

    python -m streams.docs                      # print the table
    python -m streams.docs --write README.md    # replace the block between the markers
    python -m streams.docs --check README.md    # exit 1 when the README block has drifted

The block sits between `<!-- settings:start -->` and `<!-- settings:end -->`.
"""

from __future__ import annotations

import argparse
import sys
import types
from enum import Enum
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from streams.settings import Settings

START = "<!-- settings:start -->"
END = "<!-- settings:end -->"

# Named by the seeds but read by the trade-updates forwarder (one per Alpaca account), not by
# this app: documented so that an operator configures both sides consistently.
FORWARDER_VARIABLES = {
    "TORGHUT_ACCOUNT_LABEL": (
        "The forwarder's account label, written into v2 envelopes (`accountLabel`, "
        "`payload.account_label`); must equal the account's `label` here."
    ),
    "TOPIC_TRADE_UPDATES_V2": (
        "The forwarder's v2 output topic; must equal `TRADING_ORDER_FEED_TOPIC_V2` here."
    ),
}


def env_name(name: str, info: FieldInfo) -> str:
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        return str(choices[0])
    return str(alias or name).upper()


def _non_none(annotation: Any) -> tuple[Any, bool]:
    """The annotation without `None`, and whether it was optional."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(get_args(annotation))
    return annotation, False


def type_text(annotation: Any) -> str:
    inner, _ = _non_none(annotation)
    if isinstance(inner, type) and issubclass(inner, Enum):
        return " \\| ".join(f"`{m.value}`" for m in inner)
    if inner is SecretStr:
        return "secret"
    if inner is Path:
        return "path"
    return getattr(inner, "__name__", str(inner))


def default_text(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        value = "true" if value else "false"
    text = str(value)
    return f"`{text}`" if text else '`""`'


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_table() -> str:
    lines = [
        "| Variable | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        lines.append(
            f"| `{env_name(name, info)}` | {type_text(info.annotation)} | "
            f"{_cell(default_text(info))} | {_cell(info.description or '')} |"
        )
    lines.append("")
    lines.append("Set on the trade-updates forwarder, not read by this app:")
    lines.append("")
    for variable, text in FORWARDER_VARIABLES.items():
        lines.append(f"- `{variable}`: {text}")
    return "\n".join(lines)


def replace_block(document: str, table: str) -> str:
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the document has no {START} ... {END} block")
    return document[: start + len(START)] + "\n" + table + "\n" + document[end:]


def current_block(document: str) -> str | None:
    start, end = document.find(START), document.find(END)
    if start < 0 or end < start:
        return None
    return document[start + len(START) : end].strip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.docs", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="README", type=Path)
    group.add_argument("--check", metavar="README", type=Path)
    args = parser.parse_args(argv)
    table = settings_table()
    if args.write:
        args.write.write_text(replace_block(args.write.read_text(), table))
        return 0
    if args.check:
        if current_block(args.check.read_text()) != table:
            print(f"{args.check}: configuration table is stale: run `make docs`", file=sys.stderr)
            return 1
        return 0
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
