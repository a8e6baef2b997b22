"""The decision ledger table: `account_label|decision_hash` → ledger entry (JSON).

Changelog-backed and co-partitioned with the decisions topic (key = account label), so an
account's entries live on the worker that runs its lane and come back with it after a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import faust

from streams.compat import raw_store_items
from streams.domain.ledger import (
    LedgerEntry,
    LedgerScan,
    decode_entry,
    encode_entry,
    is_done,
    slot_key,
)
from streams.settings import Settings
from tables.durable import ChangelogAcks, add_account_table


def declare_slots(app: faust.App, settings: Settings, acks: ChangelogAcks) -> Any:
    return add_account_table(
        app,
        settings,
        acks,
        "lane-slots",
        "Signal slots: account_label|symbol|timeframe|event time -> the decision taking it.",
    )


def declare_ledger(app: faust.App, settings: Settings, acks: ChangelogAcks) -> Any:
    return add_account_table(
        app,
        settings,
        acks,
        "lane-ledger",
        "Decision ledger: account_label|decision_hash -> lane state (idempotency).",
    )


class FaustLedger:
    """The lane's `Ledger` over the table; writes are made inside the lanes agent."""

    def __init__(self, table: Any, slots: Any) -> None:
        self.table = table
        self.slots = slots  # written with the entries, in the same decision's event and scope

    def get(self, key: str) -> LedgerEntry | None:
        raw = self.table.get(key.encode())
        return decode_entry(raw) if raw is not None else None

    async def put(self, entry: LedgerEntry, *, durable: bool = True) -> None:
        self.table[entry.key.encode()] = encode_entry(entry)
        if durable:
            await self.table.acks.wait()

    def slot_owner(self, account_label: str, slot: str) -> str | None:
        """The decision hash that took `slot` of the account, if any."""
        raw = self.slots.get(slot_key(account_label, slot).encode())
        return bytes(raw).decode() if raw is not None else None

    def take_slot(self, account_label: str, slot: str, decision_hash: str) -> None:
        """Record the slot's decision; durable with the entry's next durable write (same scope)."""
        self.slots[slot_key(account_label, slot).encode()] = decision_hash.encode()

    def _raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        """The active partitions' entries as stored (straight from RocksDB when it is used)."""
        raw = raw_store_items(self.table)
        if raw is not None:
            return raw
        return cast(Iterator[tuple[bytes, bytes]], iter(self.table.items()))

    def scan(self) -> LedgerScan:
        """Entries per account and the unfinished ones, over the partitions this worker holds.

        Finished entries (most of them) are counted without being decoded.
        """
        scan = LedgerScan()
        for key, raw in self._raw_items():
            label = bytes(key).split(b"|", 1)[0].decode()
            scan.sizes[label] = scan.sizes.get(label, 0) + 1
            if not is_done(raw):
                scan.unfinished.append(decode_entry(raw))
        return scan
