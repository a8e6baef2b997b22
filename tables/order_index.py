"""Order index (GlobalTable, on every worker): which account owns an order.

`cid:<client_order_id>` → account label, written by the lane *before* it submits, and
`oid:<alpaca_order_id>` → account label, written when the broker acknowledged. The order feed
reads it to attribute v1 trade updates (which carry no account) with `account_for(...)`.
"""

from __future__ import annotations

from typing import Any

import faust

from streams.settings import Settings
from tables.durable import ChangelogAcks, add_acked_table


def declare_order_index(app: faust.App, settings: Settings, acks: ChangelogAcks) -> Any:
    return add_acked_table(
        app,
        acks,
        is_global=True,
        name="order-index",
        key_type=bytes,
        value_type=bytes,
        partitions=settings.topic_partitions,
        standby_buffer_size=1,  # apply other workers' entries as they come
        help="Order ownership: cid:<client_order_id> / oid:<alpaca_order_id> -> account label.",
    )


def _key(kind: str, order_key: str) -> bytes:
    return f"{kind}:{order_key}".encode()


class FaustOrderIndex:
    """The lane's `OrderIndex`; written inside the lanes agent (table writes need its event)."""

    def __init__(self, table: Any) -> None:
        self.table = table

    def remember(
        self,
        account_label: str,
        *,
        client_order_id: str | None = None,
        alpaca_order_id: str | None = None,
    ) -> None:
        label = account_label.encode()
        if client_order_id:
            self.table[_key("cid", client_order_id)] = label
        if alpaca_order_id:
            self.table[_key("oid", alpaca_order_id)] = label

    def account_for(
        self, *, client_order_id: str | None = None, alpaca_order_id: str | None = None
    ) -> str | None:
        """The account that owns the order (client order id first), or None when unknown."""
        for kind, value in (("cid", client_order_id), ("oid", alpaca_order_id)):
            if value:
                label = self.table.get(_key(kind, value))
                if label is not None:
                    return bytes(label).decode()
        return None
