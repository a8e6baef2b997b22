"""Changelog-backed tables. Importing this package registers them on `streams.app.app`."""
