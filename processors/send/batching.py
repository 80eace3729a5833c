"""Writes asked for in the same event-loop turn leave as one batch, acknowledged once.

The send worker finishes many calls per pacing tick; each finish writes a ledger entry and a
SendResult and may acknowledge its source record only after both are on the broker. Awaited one by
one that was two librdkafka futures per message and two delivery-report wake-ups; coalesced, every
finish of one loop turn waits on the same future (``KafkaPublisher.publish_many``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """``await submit(item)`` returns once ``flush`` wrote the batch ``item`` landed in (or raises
    its error). A batch is closed at the end of the loop turn it was opened in, or at ``most`` items."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[object]], *, most: int = 2000) -> None:
        self._flush = flush
        self._most = most
        self._items: list[T] = []
        self._fut: asyncio.Future | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> None:
        if self._fut is None:
            loop = asyncio.get_running_loop()
            self._fut = loop.create_future()
            loop.call_soon(self._close)
        fut = self._fut
        self._items.append(item)
        if len(self._items) >= self._most:
            self._close()
        await asyncio.shield(fut)  # one caller cancelled never cancels the others' write

    def _close(self) -> None:
        fut, items = self._fut, self._items
        if fut is None or not items:
            return
        self._fut, self._items = None, []
        self.batches += 1
        self.items += len(items)
        task = asyncio.ensure_future(self._flush(items))

        def done(t: asyncio.Task) -> None:
            if fut.done():
                return
            if t.cancelled():
                fut.cancel()
            elif t.exception() is not None:
                fut.set_exception(t.exception())  # type: ignore[arg-type]
            else:
                fut.set_result(None)

        task.add_done_callback(done)
