"""Control topic: every worker follows the whole compacted topic (no consumer group).

The lanes do not take a decision before the replay is caught up (see `agents/lanes.py`).
"""

from __future__ import annotations

import asyncio
import logging

from streams.app import app
from streams.execution.runtime import get_control_feed

log = logging.getLogger(__name__)


async def follow_control_topic() -> None:
    """Replay then follow `torghut.control.v1`; a broken connection is reopened."""
    feed = get_control_feed()
    while True:
        try:
            await feed.run()
        except asyncio.CancelledError:
            raise
        except Exception:  # reopen; lanes stay gated only until the first catch-up
            log.exception("control topic reader failed; reopening")
            await asyncio.sleep(2.0)


# Registered without decorator syntax: faust's `task` decorator is untyped.
app.task(follow_control_topic)
