"""Web views on the faust web server (status, health, readiness, metrics)."""
