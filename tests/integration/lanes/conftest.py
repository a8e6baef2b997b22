"""Lanes fixtures: head-schema databases (shared with the persistence tests)."""

from __future__ import annotations

from tests.integration.persistence.conftest import head_dsn, head_template

__all__ = ["head_dsn", "head_template"]
