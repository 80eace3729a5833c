"""Acknowledge a partition's records in offset order, whatever order their work finishes in.

The intake writes many requests at once (each to its own topic and partition), so their writes
finish out of order. Faust commits the highest run of consecutive acknowledged offsets, but it
misjudges a gap at the head of that run: with offset *c* not acknowledged and *c+1* acknowledged,
faust-streaming 0.15's ``Consumer._new_offset`` commits *c+2* (it only refuses a gap of two or
more after the last commit, and any gap before the first one). A request whose write is still
being retried would so be committed past, and lost if the worker stopped then. Acknowledging in
offset order leaves no gap to misjudge: a record is acknowledged only once it and every record
before it in its partition are done.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


class InOrderAcks:
    def __init__(self, ack: Callable[[Any], Awaitable[Any]]) -> None:
        self._ack = ack
        self._pending: dict[Any, deque[list]] = {}  # tp -> [[event, done], ...] in offset order

    def started(self, event: Any) -> list:
        """Call in the order the records arrive; hand the result to ``done``."""
        entry = [event, False]
        self._pending.setdefault(event.message.tp, deque()).append(entry)
        return entry

    async def done(self, entry: list) -> None:
        """The record's work is done: acknowledge it and every done record after it, in order."""
        entry[1] = True
        queue = self._pending.get(entry[0].message.tp)
        while queue and queue[0][1]:
            await self._ack(queue.popleft()[0])

    def forget(self, tps: Iterable[Any]) -> None:
        """Partitions revoked: their records come again from the committed offset to whoever owns them."""
        for tp in tps:
            self._pending.pop(tp, None)

    def waiting(self) -> int:
        return sum(len(q) for q in self._pending.values())
