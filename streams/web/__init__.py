"""Web views on the faust web server (status, health, readiness, metrics)."""

from streams.web import views  # noqa: F401
