"""The operator page (`GET /trading/`): every account's lane and the worker's readiness, as HTML.

A pure function of the data `/trading/status` and `/readyz` serve: no I/O, no state. Read-only (no
form, no button, no script); it reloads itself every `refresh_seconds`. Every value is scrubbed of
anything secret-shaped and HTML-escaped before it reaches the page, and credentials are never among
its inputs' fields that it shows (account label, mode, health, kill switch, last events, lag).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from streams.observability.scrub import scrub_text

DEFAULT_REFRESH_SECONDS = 5

_STYLE = """
body{font-family:DejaVu Sans,Arial,sans-serif;margin:1.2em;color:#1b1f24;background:#fafbfc}
h1{font-size:1.3em;margin:0 0 .4em}
.meta{color:#57606a;margin:.2em 0 .8em}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{border:1px solid #d0d7de;padding:.3em .45em;text-align:left;vertical-align:top;
max-width:20em}
td{overflow-wrap:anywhere}
.time,.nw{white-space:nowrap}
th{background:#eaeef2}
.ok{color:#116329;font-weight:bold}.bad{color:#a40e26;font-weight:bold}
.warn{color:#9a6700;font-weight:bold}.muted{color:#6e7781}
code{font-size:.85em}
"""


def _text(value: object) -> str:
    """Scrubbed, escaped text of any value ('-' for None)."""
    if value is None:
        return "-"
    return html.escape(scrub_text(str(value)), quote=True)


def _time(value: object) -> str:
    """An ISO timestamp as `YYYY-MM-DD HH:MM:SS` (UTC as given), the full value on hover."""
    if not value:
        return '<span class="muted">-</span>'
    try:
        short = datetime.fromisoformat(str(value)).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return f'<span class="muted">{_text(value)}</span>'
    return f'<span class="muted time" title="{_text(value)}">{_text(short)}</span>'


def _badge(ok: bool | None, yes: str, no: str, unknown: str = "unknown") -> str:
    if ok is None:
        return f'<span class="muted">{_text(unknown)}</span>'
    return (
        f'<span class="ok">{_text(yes)}</span>' if ok else f'<span class="bad">{_text(no)}</span>'
    )


def _event(event: Mapping[str, Any] | None) -> str:
    """A last decision/submission/rejection: short hash, time, reasons."""
    if not event:
        return '<span class="muted">none</span>'
    parts = [f"<code>{_text(str(event.get('decision_hash') or '')[:12])}</code>"]
    parts.append(_time(event.get("at")))
    reasons = event.get("reasons")
    if reasons:
        parts.append(_text(", ".join(str(r) for r in reasons)))
    return "<br>".join(parts)


def _error(error: Mapping[str, Any] | None) -> str:
    if not error:
        return '<span class="muted">none</span>'
    return (
        f'<span class="bad">{_text(error.get("kind"))}</span>: {_text(error.get("message"))}'
        f"<br>{_time(error.get('at'))}"
    )


def _lag(partitions: Sequence[Mapping[str, Any]] | None) -> str:
    """Worst lag of the lane's partitions owned here: seconds, then records."""
    if not partitions:
        return '<span class="muted">no reading here</span>'
    seconds = max(_number(p.get("lag_seconds")) for p in partitions)
    records = sum(int(_number(p.get("lag"))) for p in partitions)
    css = "ok" if records == 0 else ("bad" if seconds >= 60 else "warn")
    return (
        f'<span class="{css} nw">{seconds:.1f} s</span>'
        f'<br><span class="muted nw">{records} records</span>'
    )


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _kill_switch(kill: Mapping[str, Any] | None) -> str:
    if not kill or not kill.get("engaged"):
        return '<span class="ok">off</span>'
    return f'<span class="bad">ENGAGED</span><br>{_text(kill.get("reason"))}'


def _state(lane: Mapping[str, Any]) -> str:
    if not lane.get("enabled"):
        return '<span class="muted">disabled</span>'
    if lane.get("owned") is False:
        return '<span class="muted">runs on another worker</span>'
    parts = [_badge(bool(lane.get("up")), "up", "down")]
    problems = lane.get("problems") or []
    parts.append(_badge(not problems, "healthy", "unhealthy"))
    if problems:
        parts.append(_text(", ".join(str(p) for p in problems)))
    if lane.get("down_reason"):
        parts.append(_text(lane["down_reason"]))
    if lane.get("flags_available") is False:
        parts.append('<span class="bad">flags unavailable</span>')
    return "<br>".join(parts)


def _lane_row(account: str, lane: Mapping[str, Any]) -> str:
    counts = lane.get("counts") or {}
    cells = [
        f'<th scope="row">{_text(account)}<br><span class="muted">{_text(lane.get("mode"))}'
        "</span></th>",
        f"<td>{_state(lane)}</td>",
        f"<td>{_kill_switch(lane.get('kill_switch'))}</td>",
        f"<td>{_event(lane.get('last_decision'))}</td>",
        f"<td>{_event(lane.get('last_submission'))}</td>",
        f"<td>{_event(lane.get('last_rejection'))}</td>",
        f"<td>{_error(lane.get('last_error'))}</td>",
        f"<td>{_lag(lane.get('lag'))}</td>",
        f"<td>{_text(counts.get('decisions', 0))} / {_text(counts.get('submissions', 0))} / "
        f"{_text(counts.get('rejections', 0))}</td>",
    ]
    return f'<tr class="lane" data-account="{_text(account)}">{"".join(cells)}</tr>'


def _readiness(readiness: Mapping[str, Any] | None) -> str:
    if readiness is None:
        return f"Ready: {_badge(None, 'yes', 'no')}"
    checks = readiness.get("checks") or {}
    failing = [
        f"{_text(name)} ({_text(check.get('detail'))})"
        for name, check in sorted(checks.items())
        if not check.get("ok")
    ]
    out = f'Ready: <span id="ready">{_badge(bool(readiness.get("ready")), "yes", "no")}</span>'
    if failing:
        out += " — not ready: " + "; ".join(failing)
    return out


def render_operator_page(
    status: Mapping[str, Any],
    readiness: Mapping[str, Any] | None,
    refresh_seconds: int = DEFAULT_REFRESH_SECONDS,
) -> str:
    """The page for a `/trading/status` body and a `/readyz` body (`Readiness.as_dict()`)."""
    worker = status.get("worker") or {}
    accounts: Mapping[str, Mapping[str, Any]] = status.get("accounts") or {}
    rows = "\n".join(_lane_row(account, accounts[account]) for account in sorted(accounts))
    if not rows:
        rows = '<tr><td colspan="9" class="muted">no lanes configured</td></tr>'
    unhealthy = status.get("unhealthy") or []
    overall = _badge(not unhealthy, "all lanes healthy", "unhealthy: " + ", ".join(unhealthy))
    refresh = max(1, int(refresh_seconds))
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>torghut-streams lanes — {_text(worker.get("app_id"))}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>torghut-streams lanes</h1>
<p class="meta">Worker of <code>{_text(worker.get("app_id"))}</code> (consumer group
<code>{_text(worker.get("group_id"))}</code>) · {_readiness(readiness)} · {overall}<br>
Generated {_time(status.get("generated_at"))} UTC · refreshes every {refresh} s · read-only; JSON at
<a href="/trading/status">/trading/status</a>, <a href="/trading/health">/trading/health</a>,
<a href="/metrics">/metrics</a></p>
<table id="lanes">
<thead><tr><th>Account</th><th>State</th><th>Kill switch</th><th>Last decision</th>
<th>Last order</th><th>Last rejection</th><th>Last error</th><th>Lag</th>
<th>Decisions / orders / rejections</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body>
</html>
"""
