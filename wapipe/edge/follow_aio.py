"""Follow a topic into memory on an asyncio event loop (aiokafka): the send worker's views
(service windows, campaign states, suppressions) and its reconciler's status events.

``AsyncTopicFollower`` reads every partition of one topic without a consumer group (nothing
committed), from the beginning or from ``since_ms()`` (the offsets of that time, asked of the
brokers; a partition with nothing as recent starts at its end), forever, and hands each record's
decoded value to ``apply`` on the loop (tombstones are passed). ``ready`` is set once every
partition was read to the end it had when the follower started; a topic still not there after
~5 s is logged (``follower.no_topic``), ``ready`` is set and nothing is followed. A record that
does not decode, or that ``apply`` refuses (``KeyError``, ``TypeError``, ``ValueError``, which a
``SerdeError`` is), is logged and counted in ``unreadable``; the next one is read. Any other
error (the broker went away, metadata failed) restarts the follower from its start a second
later. It runs on the send worker's hot loop (about one status event per message sent): each
``getmany`` takes up to 2,000 records and waits at most 200 ms; no work per record beyond
``decode`` and ``apply``.

The consumer comes from ``clients.aiokafka_reader``, read_uncommitted (these topics are written
without transactions).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka import TopicPartition

from wapipe.edge.clients import aiokafka_reader, topic_partitions
from wapipe.edge.endpoint import Endpoint
from wapipe.log import get_logger

logger = get_logger(__name__)

UNREADABLE = (KeyError, TypeError, ValueError)  # a record passed (wapipe.avro.SerdeError is a ValueError)


class Decoder(Protocol):
    def decode(self, data: bytes | None, name: str) -> Any: ...


async def cancel(task: asyncio.Task | None) -> None:
    """Cancel ``task`` (if any) and wait until it has ended, whatever it raised."""
    if task is not None:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass


class AsyncTopicFollower:
    """Reads every partition of ``topic`` from ``since_ms`` (None: the beginning), forever."""

    def __init__(self, bootstrap: Endpoint, topic: str, record_name: str, serde: Decoder,
                 apply: Callable[[Any], None], *, since_ms: Callable[[], int] | None = None) -> None:
        self.bootstrap, self.topic, self.record_name, self.serde = bootstrap, topic, record_name, serde
        self._apply = apply
        self._since_ms = since_ms
        self.ready = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.applied = 0  # records applied
        self.positions: dict[int, int] = {}  # partition -> the next offset to read (has the view seen a write?)
        self.unreadable = 0

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._forever())

    async def _forever(self) -> None:
        while True:
            try:
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker went away, metadata failed: read again from the start
                logger.exception("follower.failed", topic=self.topic)
                await asyncio.sleep(1.0)

    async def stop(self) -> None:
        await cancel(self._task)

    async def _run(self) -> None:
        consumer = aiokafka_reader(self.bootstrap, isolation_level="read_uncommitted")
        await consumer.start()
        try:
            parts: list[int] = []
            for _ in range(50):
                parts = await asyncio.to_thread(topic_partitions, self.bootstrap, self.topic)
                if parts:
                    break
                await asyncio.sleep(0.1)
            tps = [TopicPartition(self.topic, p) for p in parts]
            if not tps:
                logger.warning("follower.no_topic", topic=self.topic)
                self.ready.set()
                return
            consumer.assign(tps)
            if self._since_ms is not None:
                found = await consumer.offsets_for_times({tp: self._since_ms() for tp in tps})
                for tp in tps:
                    if found.get(tp) is not None:
                        consumer.seek(tp, found[tp].offset)
                    else:
                        await consumer.seek_to_end(tp)
            else:
                await consumer.seek_to_beginning(*tps)
            for tp in tps:  # where each partition starts (one the window skipped to its end has no record to read)
                self.positions[tp.partition] = await consumer.position(tp)
            ends = await consumer.end_offsets(tps)
            while True:
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for msgs in batch.values():
                    for msg in msgs:
                        if msg.value is None:
                            continue
                        try:
                            self._apply(self.serde.decode(msg.value, self.record_name))
                            self.applied += 1
                        except UNREADABLE as exc:
                            self.unreadable += 1
                            logger.warning("follower.unreadable", topic=self.topic, offset=msg.offset, error=str(exc))
                # the next offset each partition reads, past what was applied (and past offsets compaction
                # removed): the ready check and /metrics read it
                for tp in (batch if self.ready.is_set() else tps):
                    self.positions[tp.partition] = await consumer.position(tp)
                if not self.ready.is_set() and all(self.positions[tp.partition] >= ends[tp] for tp in tps):
                    self.ready.set()
        finally:
            await consumer.stop()
