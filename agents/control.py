"""Control topic: every worker follows the whole compacted topic (no consumer group).

The lanes do not take a decision before the replay is caught up (`LanesRunner.run`).
"""

from __future__ import annotations

from streams.app import app


async def follow_control_topic() -> None:
    """Replay then follow `torghut.control.v1`; a broken connection is reopened."""
    await app.context.control_feed.run_forever()


# Registered without decorator syntax: faust's `task` decorator is untyped.
app.task(follow_control_topic)
