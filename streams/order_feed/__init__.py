"""Order-feed services (I/O adapters around the pure core in `streams.domain.order_feed`): the
batch applier, the per-account REST reconciler and the worker's long-lived collaborators."""
