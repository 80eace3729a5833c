"""Per-number sending state and the work under way, shared by the scheduler and the stages that
put a job back in its number's queue.

* ``Number``: one phone number's queue (``NumberQueue``), pacer (``NumberPacer``), pair limiter
  (``PairLimiter``) and the event that wakes its loop.
* ``Numbers``: every number this worker sends for, the tenants' messaging tier (``TierBudget``),
  ``enqueue`` (a job into its number's queue, taken by the ``Buffer``).
* ``Work``: the tasks under way per partition (a revocation and a shutdown wait for them).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from processors.send.buffer import Buffer
from processors.send.lanes import Job, NumberQueue
from processors.send.ledger_store import TierSend
from processors.send.pacing import NumberPacer, PairLimiter, TierBudget
from processors.send.slots import FairSlots
from wapipe import log
from wapipe.messages.send import TRANSACTIONAL

logger = log.get_logger(__name__)


@dataclass(eq=False)
class Number:
    pnid: str
    queue: NumberQueue
    pacer: NumberPacer
    pairs: PairLimiter
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    loop: asyncio.Task | None = None

    def sendable(self, paused: Callable[[str, str], bool]) -> int:
        """Jobs queued that may go now (a paused campaign's may not)."""
        q = self.queue
        return len(q.tx) + sum(len(jobs) for cid, jobs in q.campaigns.items() if not (cid and paused(q.tenant, cid)))


class Numbers:
    def __init__(self, settings: Any, *, registry: Any, buffer: Buffer, slots: FairSlots) -> None:
        self.s = settings
        self.registry = registry
        self.buffer = buffer
        self.slots = slots
        self.tier = TierBudget()
        self.by_id: dict[str, Number] = {}

    def get(self, pnid: str) -> Number:
        n = self.by_id.get(pnid)
        if n is None:
            s = self.s
            n = self.by_id[pnid] = Number(pnid, NumberQueue(),
                                          NumberPacer(self.limit(pnid), safety=s.send_rate_safety,
                                                      jitter=s.send_window_jitter_s, learn=s.send_window_learn,
                                                      margin=s.send_window_margin_ms / 1000.0),
                                          PairLimiter(s.send_pair_interval_s, s.send_pair_burst))
        return n

    def limit(self, pnid: str) -> int:
        number = self.registry.number(pnid)
        mps = getattr(number, "throughput_mps", None) or self.s.send_default_mps
        return max(1, min(1000, int(mps)))

    def enough(self, n: Number) -> int:
        """Sendable jobs that keep a number busy for 2 s."""
        return max(64, int(2 * n.pacer.limit))

    def enqueue(self, job: Job, *, front: bool = False) -> Number:
        """Queue ``job`` for its number (created on first use; its loop is the scheduler's), or
        hold it in the number's timed heap until its ``not_before``."""
        n = self.get(job.cmd.phone_number_id)
        q = n.queue
        q.tenant = job.cmd.tenant_id
        q.partition = job.partition
        self.buffer.take(job)
        delay = job.not_before - time.time()
        if delay > 0:
            q.size += 1
            q.defer(job, time.monotonic() + delay)
        else:
            q.push(job, front=front)
            if job.lane == TRANSACTIONAL:
                self.slots.promote(n.pnid)  # its loop may be waiting for a slot in its tenant's turn
        n.wake.set()
        return n

    def drain(self, predicate: Callable[[Job], bool]) -> list[Job]:
        """Remove and return the queued jobs matching ``predicate`` from every number."""
        return [job for n in self.by_id.values() for job in n.queue.drain(predicate)]

    def backlog(self) -> int:
        return sum(n.queue.size for n in self.by_id.values())

    def rebuild_tier(self, partition: int, send: TierSend) -> None:  # noqa: ARG002 - the ledger's hook shape
        """Ledger load hook: accepted business-initiated sends of the last 24 h use the tier."""
        self.tier.record(send.tenant, send.subject, send.at_ms / 1000)


class Work:
    """Tasks under way, by the partitions of their jobs."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.by_partition: dict[int, set[asyncio.Task]] = defaultdict(set)

    def call(self, job: Job, coro: Awaitable[None]) -> None:
        """Run one job's step that holds a Graph-call slot; the slot is freed when it ends."""
        task = asyncio.ensure_future(coro)
        tasks = self.by_partition[job.partition]
        tasks.add(task)

        def done(t: asyncio.Task) -> None:
            tasks.discard(t)
            self.slots.release()
            if not t.cancelled() and t.exception() is not None:
                logger.error("dispatcher.task_failed", key=job.key, error=repr(t.exception()))

        task.add_done_callback(done)

    def batch(self, jobs: list[Job], coro: Awaitable[None]) -> None:
        """Run a batch's step; it counts as work under way for every partition of its jobs."""
        task = asyncio.ensure_future(coro)
        owners = [self.by_partition[p] for p in {j.partition for j in jobs}]
        for tasks in owners:
            tasks.add(task)

        def done(t: asyncio.Task) -> None:
            for tasks in owners:
                tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                logger.error("dispatcher.batch_failed", jobs=len(jobs), error=repr(t.exception()))

        task.add_done_callback(done)

    def of(self, partitions: Iterable[int]) -> list[asyncio.Task]:
        return [t for p in partitions for t in self.by_partition.get(p, ())]

    def all(self) -> list[asyncio.Task]:
        return [t for ts in self.by_partition.values() for t in ts]
