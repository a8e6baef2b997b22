"""The structure the README's Architecture section promises, checked on the source tree.

- No process state reached through imports: no `lru_cache`/`cache` getters, no module-level
  `global` writes in the app's packages (the worker context owns that state).
- Agents are wiring only: no loops, no `try`, no classes in `agents/`.
- Private internals of faust, mode, aiokafka and alpaca-py appear only in `streams/compat.py`.
- One partition function (`streams/ownership.py`), one registry parse per worker (the context).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP_PACKAGES = ("streams", "agents", "tables")
# Pure memoisation of schema parsing (same input, same output) is not process state.
PURE_MEMO = {"schemas/codecs.py", "streams/domain/strategy/runtime.py"}
# The secret scrubber sits behind every log handler, and logging is process-wide by nature: a
# secret registered by any component must be redacted from every log line of the process.
PROCESS_WIDE = {"streams/domain/secrets.py"}
# Private names of the libraries the app must reach only through streams/compat.py.
PRIVATE_INTERNALS = (
    "_current_event",
    "_iteritems",
    "_seek_offsets",
    "_actors",
    "assigned_actives()",
    "._client.",
    "_on_changelog_event",
    "_db_for_partition",
    "_maybe_topic",
    "_maybe_set_key_ttl",
    "_sensor_on_set",
    "._session",
    "._retry",
    "_start_ws",
    "_run_forever",
    "._recovery",
    "._base_url",
)


def sources(*packages: str) -> Iterator[tuple[str, str]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text()


def test_no_cached_getters_or_module_globals() -> None:
    offenders = []
    for name, text in sources(*APP_PACKAGES, "schemas"):
        if name in PURE_MEMO:
            continue
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Global) and name not in PROCESS_WIDE:
                offenders.append(f"{name}:{node.lineno} global {', '.join(node.names)}")
            decorators = getattr(node, "decorator_list", [])
            for decorator in decorators:
                text_of = ast.unparse(decorator)
                if re.search(r"\b(lru_cache|cache)\b", text_of):
                    offenders.append(f"{name}:{node.lineno} @{text_of}")
    assert offenders == []


def test_agents_are_wiring_only() -> None:
    offenders = []
    for name, text in sources("agents"):
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.For | ast.AsyncFor | ast.While | ast.Try | ast.ClassDef):
                offenders.append(f"{name}:{node.lineno} {type(node).__name__}")
            if isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef):
                body = [
                    n for n in node.body if not isinstance(n, ast.Expr) or n is not node.body[0]
                ]
                if len(body) > 4:
                    offenders.append(f"{name}:{node.lineno} {node.name} has {len(body)} statements")
    assert offenders == []


def test_private_internals_only_in_the_compat_module() -> None:
    offenders = []
    for name, text in sources(*APP_PACKAGES):
        if name == "streams/compat.py":
            continue
        for number, line in enumerate(text.splitlines(), 1):
            code = line.split("#", 1)[0]
            for internal in PRIVATE_INTERNALS:
                dotted = internal if internal.startswith(".") else "." + internal
                for match in re.finditer(re.escape(dotted), code):
                    owner = re.search(r"(\w+)$", code[: match.start()])
                    if owner is None or owner.group(1) not in {"self", "cls"}:
                        offenders.append(f"{name}:{number} {internal}: {line.strip()}")
    assert offenders == []


def test_one_partition_function() -> None:
    users = [
        name
        for name, text in sources(*APP_PACKAGES)
        if re.search(r"\bmurmur2\b|DefaultPartitioner", text)
    ]
    assert users == ["streams/ownership.py"]


def test_the_worker_parses_the_registry_in_one_place() -> None:
    """The worker's registry comes from the context; CLI commands and the forwarder are
    processes of their own and parse it once each."""
    callers = sorted(
        name
        for name, text in sources(*APP_PACKAGES)
        if re.search(r"\bload_registry(_source)?\(|load_account_registry\(", text)
        and name != "streams/domain/accounts.py"
    )
    assert callers == [
        "streams/cli/accounts.py",
        "streams/cli/clickhouse.py",
        "streams/cli/kill_switch.py",
        "streams/context.py",
        "streams/forwarder/runner.py",
    ]


def test_every_topic_and_table_is_declared_in_one_place() -> None:
    topic_decls = [
        name for name, text in sources(*APP_PACKAGES) if re.search(r"\bapp\.topic\(", text)
    ]
    assert topic_decls == ["streams/topics.py"]
    table_decls = [
        name
        for name, text in sources(*APP_PACKAGES)
        if re.search(r"app\.(Table|GlobalTable|tables\.add)\(", text)
    ]
    assert all(name.startswith("tables/") for name in table_decls), table_decls
