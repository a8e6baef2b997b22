"""The pure, typed domain core: no I/O in here."""
