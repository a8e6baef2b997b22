"""Execution lanes: one lane per account, from decisions to broker orders and Postgres rows.

`orchestration` (reading decisions, per-account dispatch, in-order acks, resume, re-drive,
upkeep), `service` (the lanes of a worker), `lane` (the submit path), `dispatch` (per-key
concurrency with in-order release), `control_feed` (kill switches from the control topic),
`persist` (Postgres rows), `cursor` (lane cursors), `crash` (test-only crash points).
"""
