"""Live inspection commands: `lanes`, `lag`, `ledger` (`faust -A streams.app <command>`).

- `lanes`: every account's live lane status, asked from the running workers' `/trading/status`.
- `lag`: the app's consumer group per partition (committed, end, lag, lag in seconds), read from
  the broker exactly like an external lag exporter does.
- `ledger --account LABEL [--hash H]`: the decision ledger table, read from its changelog topic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import requests
from faust.cli import AppCommand, option

from streams.app import app, settings
from streams.compat import AgentsCommand
from streams.kafka_security import aiokafka_kwargs
from streams.observability.changelog import read_table_state
from streams.observability.inspection import (
    LANE_HEADERS,
    entry_matches,
    jsonable,
    lag_rows,
    lane_rows,
    merge_lanes,
)
from streams.observability.lag import BrokerLagReader, PartitionLag
from streams.observability.worker import agent_topics, group_id
from streams.ownership import bootstrap_servers

STATUS_TIMEOUT_SECONDS = 5.0


# ---------------------------------------------------------------- faust agents


class agents(AgentsCommand):
    """List agents."""

    # Replaces faust's built-in `agents` command (same name), which crashes on an agent that
    # reads several topics: such agents list every topic (see streams.compat.AgentsCommand).


# ---------------------------------------------------------------- lanes


def fetch_status(url: str) -> dict[str, Any]:
    response = requests.get(url.rstrip("/") + "/trading/status", timeout=STATUS_TIMEOUT_SECONDS)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@app.command(
    option(
        "--url",
        "urls",
        multiple=True,
        help="Worker web URL (repeat for every worker). Default: this host's TORGHUT_WEB_PORT.",
    ),
    option("--json", "as_json", is_flag=True, default=False, help="Print JSON."),
)
async def lanes(self: AppCommand, urls: Sequence[str], as_json: bool) -> None:
    """Live status of every account lane, from the running workers."""
    targets = list(urls) or [f"http://{settings.web_host}:{settings.web_port}"]
    merged = merge_lanes(fetch_status(url) for url in targets)
    if as_json:
        self.say(json.dumps(merged, indent=2, default=str))
        return
    self.say(self.tabulate(lane_rows(merged), headers=LANE_HEADERS, title="Lanes"))


# ---------------------------------------------------------------- lag


async def group_lag() -> list[PartitionLag]:
    async with BrokerLagReader(
        bootstrap_servers(settings.kafka_brokers),
        group_id(app),
        security=aiokafka_kwargs(settings),
    ) as reader:
        return await reader.read(agent_topics(app))


@app.command(option("--json", "as_json", is_flag=True, default=False, help="Print JSON."))
async def lag(self: AppCommand, as_json: bool) -> None:
    """The app's consumer group lag per partition, read from the broker."""
    rows = await group_lag()
    if as_json:
        self.say(json.dumps({"group": group_id(app), "partitions": [r.as_dict() for r in rows]}))
        return
    self.say(
        self.tabulate(
            lag_rows(rows),
            headers=["topic", "partition", "committed", "end", "lag", "lag s"],
            title=f"Consumer group {group_id(app)}",
        )
    )


# ---------------------------------------------------------------- ledger


def ledger_table() -> Any:
    tables = [t for t in app.tables.values() if "ledger" in t.name]
    if not tables:
        raise SystemExit("no ledger table is registered on the app")
    return tables[0]


async def ledger_entries(account: str, decision_hash: str | None) -> list[dict[str, Any]]:
    table = ledger_table()
    topic = table.changelog_topic.get_topic_name()
    state = await read_table_state(
        bootstrap_servers(settings.kafka_brokers), topic, security=aiokafka_kwargs(settings)
    )
    out = []
    for raw_key, raw_value in state.items():
        key = jsonable(
            app.serializers.loads_key(table.key_type, raw_key, serializer=table.key_serializer)
        )
        value = jsonable(
            app.serializers.loads_value(
                table.value_type, raw_value, serializer=table.value_serializer
            )
        )
        if entry_matches(key, value, account, decision_hash):
            out.append({"key": key, "value": value})
    return sorted(out, key=lambda e: json.dumps(e["key"], default=str))


@app.command(
    option("--account", required=True, help="Account label."),
    option("--hash", "decision_hash", default=None, help="Only this decision hash."),
)
async def ledger(self: AppCommand, account: str, decision_hash: str | None) -> None:
    """Decision ledger entries of one account (from the table's changelog topic), JSON lines."""
    entries = await ledger_entries(account, decision_hash)
    for entry in entries:
        self.say(json.dumps(entry, default=str))
    self.say(f"# {len(entries)} ledger entries for {account}", file=sys.stderr)
