"""Strategy runtime v3: a registry of plugins, an isolating runtime and a deterministic aggregator.

Pure and deterministic: the same signals in the same order give the same intents (the circuit
breaker runs on the signal's event time, never the wall clock).
"""
