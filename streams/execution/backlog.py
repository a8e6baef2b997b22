"""An account's deferred decisions: re-driven oldest first, never more at once than it has room.

A decision read while its account has `MAX_PER_ACCOUNT` decisions unfinished is not waited for
(that would stop the reader, and with it every account): it is parked durably in its ledger
(`Lane.defer`) and its offset acked. The backlog remembers it, in deferral order, and the lanes
re-drive it through the retry topic as soon as the account has a free slot:

    read ──admit?──▶ yes: a slot of the account (the dispatcher's chain)
           └──no──▶ deferred (ledger, durable) ──ready──▶ waiting ──due(room)──▶ sent (retry topic)
                                                              ▲                        │
                                                              └── full again ◀── read ─┘

- **Room-limited**: `due(room)` hands out at most `room - in_flight` decisions, where `room` is
  the account's free slots now and `in_flight` the re-drives sent and not read back yet. A busy
  account therefore never loops records through the retry topic: nothing is sent while it is
  full, and every re-drive read back has a slot kept for it.
- **FIFO**: decisions are handed out in the order they were deferred (a sequence number taken
  when the reader diverted them). A re-drive that finds its account full again keeps its place.
- **In order with new decisions**: while an account has a backlog, a new decision for it is
  deferred behind it (`admit`), so a steady stream of new decisions never starves older ones.
- **Durable first**: a decision is handed out only once its deferral is in the ledger (`ready`);
  the backlog itself is memory, rebuilt from the ledger after a start or rebalance
  (`LaneService.resume`), which is what makes a deferred decision survive a crash or a lane move.
- **Lost re-drives**: a re-drive not read back within `lost_after` (a record that never arrived,
  e.g. the lane moved away and back) is handed out again. A decision re-driven twice is
  harmless: the ledger takes it once (a finished entry is skipped, an entry in `submitting` is
  looked up at the broker before anything is sent).

Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import heapq
from datetime import datetime, timedelta
from itertools import count


class Backlog:
    def __init__(self) -> None:
        self._seq = count()
        self._order: dict[str, int] = {}  # every decision in the backlog → its place
        self._pending: set[str] = set()  # diverted, deferral not yet durable
        self._waiting: list[tuple[int, str]] = []  # heap of durable ones not sent (lazy deletes)
        self._queued: set[str] = set()  # what `_waiting` really holds
        self._sent: dict[str, datetime] = {}  # re-driven, not read back yet → when
        self.deferred_again = 0  # re-drives read back while the account was full again

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, decision_hash: object) -> bool:
        return decision_hash in self._order

    @property
    def in_flight(self) -> int:
        """Re-drives sent to the retry topic and not read back yet."""
        return len(self._sent)

    def hashes(self) -> list[str]:
        """Every decision in the backlog, oldest first (for status and tests)."""
        return sorted(self._order, key=self._order.__getitem__)

    # ---- the reader
    def admit(self, decision_hash: str, full: bool) -> bool:
        """A decision was read: may it take a slot of its account now (True), or is it deferred
        (False; it then has its place here, and the lane records the deferral)?"""
        if decision_hash in self._sent:  # our own re-drive: its slot was kept for it
            del self._sent[decision_hash]
            if not full:
                self.discard(decision_hash)
                return True
            self.deferred_again += 1
            self._enqueue(decision_hash)  # full again after all: it keeps its place
            return False
        if not full and (decision_hash in self._order or not self._order):
            # Nothing waits before it, or it is a re-drive not counted here (sent by an earlier
            # owner of the lane, or one taken for lost): it goes on.
            self.discard(decision_hash)
            return True
        if decision_hash not in self._order:
            self._order[decision_hash] = next(self._seq)
            self._pending.add(decision_hash)
        return False

    # ---- the lane
    def ready(self, decision_hash: str) -> None:
        """The decision's deferral is in the ledger: it may be re-driven (added at the end if
        the backlog did not know it, e.g. it was rebuilt meanwhile)."""
        if decision_hash not in self._order:
            self._order[decision_hash] = next(self._seq)
        self._pending.discard(decision_hash)
        if decision_hash not in self._sent:
            self._enqueue(decision_hash)

    def discard(self, decision_hash: str) -> None:
        """The decision left the backlog (taken up, finished, or no longer this worker's)."""
        self._order.pop(decision_hash, None)
        self._pending.discard(decision_hash)
        self._queued.discard(decision_hash)  # its heap item is skipped when reached
        self._sent.pop(decision_hash, None)
        if not self._order:  # nothing left: drop the heap's skipped items with it
            self._waiting.clear()
            self._queued.clear()

    def clear(self) -> None:
        """Forget everything (a rebalance: the backlog is rebuilt from the ledger)."""
        self._order.clear()
        self._pending.clear()
        self._waiting.clear()
        self._queued.clear()
        self._sent.clear()

    # ---- re-driving
    def due(self, room: int, now: datetime, lost_after: timedelta) -> list[str]:
        """The oldest durable decisions to re-drive now: at most `room` (free slots of the
        account) minus the re-drives still on their way. Each is counted in flight from now."""
        for decision_hash, sent_at in list(self._sent.items()):
            if now - sent_at >= lost_after:  # never read back: hand it out again
                del self._sent[decision_hash]
                self._enqueue(decision_hash)
        wanted = room - len(self._sent)
        out: list[str] = []
        while wanted > 0 and self._waiting:
            seq, decision_hash = heapq.heappop(self._waiting)
            if decision_hash not in self._queued or self._order.get(decision_hash) != seq:
                continue  # discarded (or queued again under its place) since
            self._queued.discard(decision_hash)
            self._sent[decision_hash] = now
            out.append(decision_hash)
            wanted -= 1
        return out

    def unsent(self, decision_hash: str) -> None:
        """A re-drive could not be sent after all: it waits again, at its place."""
        if self._sent.pop(decision_hash, None) is not None:
            self._enqueue(decision_hash)

    def _enqueue(self, decision_hash: str) -> None:
        seq = self._order.get(decision_hash)
        if seq is None or decision_hash in self._queued or decision_hash in self._pending:
            return
        self._queued.add(decision_hash)
        heapq.heappush(self._waiting, (seq, decision_hash))
