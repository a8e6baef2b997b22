"""Order-feed fixtures: head-schema databases (shared with the persistence tests), builders."""

from __future__ import annotations

from tests.integration.persistence.conftest import head_dsn, head_template, repo

__all__ = ["head_dsn", "head_template", "repo"]
