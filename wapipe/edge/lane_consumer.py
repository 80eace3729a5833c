"""A consumer group member whose records reach an asyncio loop in batches (librdkafka, one thread).

``LaneConsumer(bootstrap, group, topics, loop=…, on_records=…, on_assigned=…, on_revoked=…)``:
a confluent-kafka consumer polled in its own thread. librdkafka prefetches every assigned partition
in its own threads; the polling thread takes what is fetched, up to ``batch`` records at a time,
and hands each batch to ``on_records(messages)`` on the loop (one loop wake-up per batch, not per
record). Nothing is skipped or reordered within a partition.

* **Rebalances** run the loop's coroutines ``on_assigned(tps)`` / ``on_revoked(tps)`` and wait for
  them: a revocation returns only once ``on_revoked`` is done, and the offsets it returns are
  committed (synchronously) before the partitions are given up, so their next owner starts right
  after the last record whose work was done here.
* **Commits** are explicit (``commit(offsets)``, from the loop): offsets move after the work is
  done, never before; auto-commit and offset store are off.
* Every call on the librdkafka consumer is made by the polling thread: the loop's ``commit``,
  ``pause`` and ``resume`` are queued to it and done before its next poll (within ``poll_s``). A
  commit made from the loop's thread while the polling thread waited in ``consume`` blocked the
  loop (measured: the worker stood still in ``Consumer.commit``). An operation queued before a
  revocation is dropped: it was meant for the assignment before (a pause carried into the next
  one would hold a partition nobody resumes, a commit could move an offset back).
* **Pauses** have reasons (``pause(tps, reason)`` / ``resume(tps, reason)``): a partition is fetched
  again only when no reason holds it any more. Records fetched before a pause still arrive.
* ``close()`` stops polling and leaves the group (the last revocation runs ``on_revoked``).

Every range of the co-partitioned topics goes to one member (``range`` assignment): partition *p*
of every topic is read by the same process.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicPartition

from wapipe import log
from wapipe.edge.clients import consumer as kafka_consumer
from wapipe.edge.endpoint import Endpoint

logger = log.get_logger(__name__)

TP = tuple[str, int]
Offsets = dict[TP, int]  # tp -> the next offset to read


class LaneConsumer:
    def __init__(self, bootstrap: Endpoint, group: str, topics: Iterable[str], *, loop: asyncio.AbstractEventLoop,
                 on_records: Callable[[list[Any]], None],
                 on_assigned: Callable[[list[TP]], Awaitable[None]],
                 on_revoked: Callable[[list[TP]], Awaitable[Offsets]],
                 batch: int = 1000, poll_s: float = 0.05, session_timeout_s: float = 10.0,
                 rebalance_timeout_s: float = 120.0, **overrides: Any) -> None:
        self.topics = sorted(topics)
        self._loop = loop
        self._on_records = on_records
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._batch = batch
        self._poll_s = poll_s
        self._rebalance_timeout_s = rebalance_timeout_s
        self._consumer = kafka_consumer(bootstrap, group, **{
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "range",
            "session.timeout.ms": int(session_timeout_s * 1000),
            "heartbeat.interval.ms": 1000,
            "fetch.wait.max.ms": 50,  # a quiet partition's fetch never holds a busy one's
            # What librdkafka prefetches ahead of the loop. Past it, librdkafka puts off the next
            # fetch of *every* partition by fetch.queue.backoff.ms (1 s by default): transactional
            # records then came ~1 s late, five at a time (measured in bench/dispatch.py).
            "queued.max.messages.kbytes": 2048,
            "fetch.queue.backoff.ms": 10,
            "fetch.error.backoff.ms": 100,
            **overrides,
        })
        self._held: dict[TP, set[str]] = defaultdict(set)  # tp -> reasons it is paused for
        self.assignment: set[TP] = set()
        self._ops: deque[tuple[int, Callable[[], None]]] = deque()  # (generation, op): loop → polling thread
        self._generation = 0  # bumped at each revocation
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lane-consumer-{group}", daemon=True)
        self.closed = asyncio.Event()
        self.error: BaseException | None = None

    def start(self) -> "LaneConsumer":
        self._consumer.subscribe(self.topics, on_assign=self._assigned, on_revoke=self._revoked,
                                 on_lost=self._revoked)
        self._thread.start()
        return self

    # --- the polling thread ----------------------------------------------------------------
    def _run(self) -> None:
        consume, deliver = self._consumer.consume, self._on_records
        try:
            while not self._stop.is_set():
                self._run_ops()
                good = []
                for m in consume(num_messages=self._batch, timeout=self._poll_s):
                    if m.error() is None:
                        good.append(m)
                    else:
                        logger.warning("lane_consumer.error", error=str(m.error()))
                if good:
                    self._loop.call_soon_threadsafe(deliver, good)
            self._run_ops()
        except BaseException as exc:  # reported on the loop: the process must not run on deaf
            self.error = exc
            logger.exception("lane_consumer.failed")
        finally:
            try:
                self._consumer.close()  # leaves the group now (the last revocation runs on_revoked)
            except Exception as exc:
                self.error = self.error or exc
                logger.exception("lane_consumer.close_failed")
            self._loop.call_soon_threadsafe(self.closed.set)

    def _run_ops(self) -> None:
        ops, generation = self._ops, self._generation
        while ops:
            queued_in, op = ops.popleft()
            if queued_in == generation:
                op()

    def _wait(self, coro: Awaitable[Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._rebalance_timeout_s)

    def _assigned(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.assignment |= set(tps)
        self._wait(self._on_assigned(tps))
        # librdkafka assigns after this returns; a pause asked for before (none yet) would be lost

    def _revoked(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._generation += 1  # what the loop queued until now was for the assignment before
        try:
            offsets = self._wait(self._on_revoked(tps))
            if offsets:
                consumer.commit(offsets=_tps(offsets), asynchronous=False)
        except Exception:
            logger.exception("lane_consumer.revoke_commit_failed", partitions=len(tps))
        finally:
            self.assignment -= set(tps)
            for tp in tps:
                self._held.pop(tp, None)

    # --- called from the loop ---------------------------------------------------------------
    def commit(self, offsets: Offsets) -> None:
        """Commit ``offsets`` (next offset to read per partition) without waiting; only those of
        partitions still assigned (a revoked one's were committed at its revocation)."""
        if offsets:
            self._queue(lambda: self._commit(offsets))

    def _queue(self, op: Callable[[], None]) -> None:
        self._ops.append((self._generation, op))

    def _commit(self, offsets: Offsets) -> None:
        mine = {tp: o for tp, o in offsets.items() if tp in self.assignment}
        if not mine:
            return
        try:
            self._consumer.commit(offsets=_tps(mine), asynchronous=True)
        except KafkaException as exc:  # no coordinator just now: the next commit carries them
            logger.info("lane_consumer.commit_deferred", error=str(exc))

    def pause(self, tps: Iterable[TP], reason: str) -> None:
        tps = list(tps)
        self._queue(lambda: self._pause(tps, reason))

    def resume(self, tps: Iterable[TP], reason: str) -> None:
        tps = list(tps)
        self._queue(lambda: self._resume(tps, reason))

    def _pause(self, tps: list[TP], reason: str) -> None:
        first = []
        for tp in tps:
            if tp not in self.assignment:
                continue
            if not self._held[tp]:
                first.append(tp)
            self._held[tp].add(reason)
        self._apply(self._consumer.pause, first)

    def _resume(self, tps: list[TP], reason: str) -> None:
        last = []
        for tp in tps:
            held = self._held.get(tp)
            if held and reason in held:
                held.discard(reason)
                if not held and tp in self.assignment:
                    last.append(tp)
        self._apply(self._consumer.resume, last)

    def _apply(self, op: Callable[[list[TopicPartition]], None], tps: list[TP]) -> None:
        if not tps:
            return
        try:
            op([TopicPartition(t, p) for t, p in tps])
        except KafkaException as exc:  # revoked meanwhile: its next assignment starts unpaused
            logger.info("lane_consumer.pause_skipped", error=str(exc))

    async def close(self, timeout_s: float = 60.0) -> None:
        """Stop polling and leave the group; returns once the consumer is closed (or the timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            try:
                await asyncio.wait_for(self.closed.wait(), timeout_s)
            except asyncio.TimeoutError:
                logger.warning("lane_consumer.close_timeout")


def _tps(offsets: Offsets) -> list[TopicPartition]:
    return [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
