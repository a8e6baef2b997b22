"""Execution lanes: one lane per account, from decisions to broker orders and Postgres rows.

`lane` (the submit path), `service` (the lanes of a worker), `control_feed` (kill switches from the
control topic), `persist` (Postgres rows), `crash` (test-only crash points), `runtime` (the
worker's wiring over faust tables; imported by the agents only).
"""
