"""Reconciliation: broker trade updates and REST state brought back into each account's rows.

I/O adapters around the pure core in `streams.domain.trade_updates`: the router (attribution and
re-keying by account), the batch applier, the per-account REST reconciler and the service that
runs it for the accounts this worker owns.
"""
