"""Operational endpoints on the faust web server.

- `/healthz`: liveness (the event loop answers and the app has not crashed).
- `/readyz`: 200 once table recovery is done and Kafka and Postgres answer, else 503.
- `/trading/status`: every lane (flags, kill switch, last decision/submission/error, lag, ledger),
  plus the strategy runtime (circuit/degraded state), the ClickHouse source and TA freshness.
- `/trading/health`: 200, or 503 naming the unhealthy lanes and why (or stale TA that blocks
  orders); it always carries the TA freshness view.
- `/metrics`: Prometheus text format (default registry).
- `/trading/`: the operator page, read-only HTML of the same lane status and readiness
  (`streams/web/operator_page.py`), refreshing itself.
"""

from __future__ import annotations

from typing import Any

from faust import web

from streams.app import app, settings
from streams.clickhouse.status import clickhouse_status, freshness_health
from streams.observability import metrics
from streams.observability.worker import WorkerObservability
from streams.web.operator_page import render_operator_page


def observability() -> WorkerObservability:
    return app.context.observability


@app.page("/healthz", name="healthz")
class Healthz(web.View):
    """Liveness probe."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        crash = app.crash_reason
        if crash is not None:
            return self.json({"alive": False, "reason": type(crash).__name__}, status=503)
        return self.json({"alive": True})


@app.page("/readyz", name="readyz")
class Readyz(web.View):
    """Readiness probe: recovery done, Kafka and Postgres answer."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        result = await observability().readiness()
        return self.json(result.as_dict(), status=200 if result.ready else 503)


@app.page("/trading/status", name="trading_status")
class TradingStatus(web.View):
    """Per-account lane status and this worker's view of its partitions."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        obs = observability()
        obs.configure_lanes()
        body = obs.board.snapshot()
        body["worker"] = obs.worker_info()
        context = app.context
        body["clickhouse"] = clickhouse_status(context.clickhouse.source_status, context.freshness)
        body["strategy_runtime"] = context.signal_pipeline.status()
        return self.json(body)


@app.page("/trading/", name="trading_page")
class TradingPage(web.View):
    """Operator page: every lane and this worker's readiness, as read-only HTML."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        obs = observability()
        obs.configure_lanes()
        readiness = (await obs.readiness()).as_dict()
        body = obs.board.snapshot()
        body["worker"] = obs.worker_info()
        return self.html(render_operator_page(body, readiness))


@app.page("/trading/health", name="trading_health")
class TradingHealth(web.View):
    """503 naming the unhealthy lanes (and their problems) when any lane is unhealthy."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        obs = observability()
        obs.configure_lanes()
        lanes = {s.account: s.problems() for s in obs.board.lanes()}
        unhealthy = {account: problems for account, problems in lanes.items() if problems}
        ta = freshness_health(app.context.freshness)
        # Stale TA is an upstream problem; it fails this check only when it stops trading.
        ta_blocks = ta["ta_stale"] and settings.ta_freshness_block_orders
        body = {
            "healthy": not unhealthy and not ta_blocks,
            "unhealthy": sorted(unhealthy),
            "problems": unhealthy,
            "lanes": {account: not problems for account, problems in lanes.items()},
            **ta,
        }
        return self.json(body, status=503 if unhealthy or ta_blocks else 200)


@app.page("/metrics", name="metrics")
class Metrics(web.View):
    """Prometheus scrape endpoint."""

    async def get(self, request: web.Request, **kwargs: Any) -> web.Response:
        obs = observability()
        await obs.readiness()
        obs.refresh_gauges()
        payload, content_type = metrics.exposition()
        # Through headers: aiohttp's `content_type=` refuses the `version`/`charset` parameters.
        return self.bytes(payload, headers={"Content-Type": content_type})
