"""The offset to commit per partition: the end of the run of records whose work is done.

The intake works on many records at once and their outcomes become durable out of order (a
campaign command waits in its number's queue while a transactional one after it is sent). The
committed offset of a partition must never pass a record whose work is not done: a worker that
stopped then would leave it unsent for good. ``InOrderOffsets`` keeps each partition's records in
the order they were read and moves the partition's committable offset only over a record that is
done and has no record before it still open.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable


class InOrderOffsets:
    def __init__(self) -> None:
        self._open: dict[Hashable, deque[list]] = {}  # tp -> [[offset, done], ...] in read order
        self._next: dict[Hashable, int] = {}  # tp -> offset to commit (next to read), not yet taken
        self.changed: dict[Hashable, int] = {}  # tp -> offset, moved since the last ``take``

    def started(self, tp: Hashable, offset: int) -> list:
        """Call in the order the records arrive; hand the result to ``done``."""
        entry = [offset, False, tp]
        q = self._open.get(tp)
        if q is None:
            q = self._open[tp] = deque()
        q.append(entry)
        return entry

    def done(self, entry: list) -> None:
        """The record's work is done: the partition's offset moves over it and every done record
        after it."""
        entry[1] = True
        tp = entry[2]
        q = self._open.get(tp)
        last = None
        while q and q[0][1]:
            last = q.popleft()[0]
        if last is not None:
            self._next[tp] = self.changed[tp] = last + 1

    def take(self) -> dict[Hashable, int]:
        """The offsets that moved since the last call (to commit now)."""
        out, self.changed = self.changed, {}
        return out

    def committable(self, tps: Iterable[Hashable]) -> dict[Hashable, int]:
        return {tp: self._next[tp] for tp in tps if tp in self._next}

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Partitions revoked: their records come again from the committed offset to whoever owns them."""
        for tp in tps:
            self._open.pop(tp, None)
            self._next.pop(tp, None)
            self.changed.pop(tp, None)

    def waiting(self) -> int:
        return sum(len(q) for q in self._open.values())
