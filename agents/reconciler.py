"""Reconciler timer: REST reconciliation of the accounts whose partition this worker holds.

An account is owned by the worker assigned the account's partition of the decisions topic (and
of the co-partitioned account-updates topic): one worker per account, the one running its lane.
Reconcile requests (a forwarder reconnected) arrive on the account-updates topic, so they too
land on the owner.
"""

from __future__ import annotations

import logging

from streams.app import app, settings
from streams.domain.order_feed.ownership import owned_accounts
from streams.execution.runtime import assigned_actives
from streams.order_feed import context
from streams.topics import account_updates_topic

log = logging.getLogger(__name__)

_OWNER_TOPICS = {settings.decisions_topic, account_updates_topic.get_topic_name()}


def my_accounts() -> list[str]:
    """Enabled accounts whose partition is assigned to this worker right now."""
    assigned = {tp.partition for tp in assigned_actives(app) if tp.topic in _OWNER_TOPICS}
    labels = [a.label for a in context.registry().enabled()]
    return owned_accounts(labels, assigned, settings.topic_partitions)


async def reconcile_owned_accounts() -> None:
    """Every owned account concurrently, each bounded by its own time budget."""
    accounts = my_accounts()
    if accounts:
        reconciler = await context.reconciler()
        await reconciler.reconcile_accounts(accounts)


async def request_reconcile(account: str, reason: str) -> None:
    """Start reconciling `account` now (if this worker owns it); does not wait for it."""
    if account not in my_accounts():
        log.info("reconcile request for an account not owned here", extra={"account": account})
        return
    (await context.reconciler()).request(account, reason)


# Registered without decorator syntax: faust's `timer` decorator is untyped.
app.timer(interval=settings.reconcile_interval_seconds, name="reconciler")(reconcile_owned_accounts)
