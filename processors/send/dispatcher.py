"""The dispatcher: the send path's stages, and what a rebalance or a shutdown does to them.

``Intake`` (decide) → ``Admission`` (queue, backpressure) → ``Scheduler`` (pace per number) →
``GraphCall`` (prepare → intents → call → classify) → ``Outcomes`` (ledger DONE/RETRY, results,
retries, dead letters, acknowledgements). They share the ``Buffer`` (what is held; pause/resume),
``Numbers`` (per-number state), ``Work`` (tasks under way) and ``FairSlots`` (calls in flight).
Every command's life goes through the ledger (``processors.send.ledger``): nothing is sent that
the ledger does not say DISPATCHING for, and no source record is acknowledged before its outcome
is durable.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from processors.send.buffer import Buffer
from processors.send.graph_call import GraphCall
from processors.send.intake import Intake
from processors.send.ledger import Ledger
from processors.send.numbers import Numbers, Work
from processors.send.scheduler import Scheduler
from processors.send.slots import FairSlots
from processors.send.stats import Stats


@dataclass(frozen=True)
class Dispatcher:
    settings: Any
    intake: Intake
    scheduler: Scheduler
    graph: GraphCall
    buffer: Buffer
    numbers: Numbers
    work: Work
    slots: FairSlots
    ledger: Ledger
    stats: Stats

    def revoked(self, partition: int) -> bool:
        """Revoked from this worker and not seen again since (the caller checks the live assignment)."""
        return partition in self.buffer.revoked

    async def on_revoked(self, partitions: set[int]) -> None:
        """Stop working on ``partitions``: drop what is queued (its next owner replays it) and
        wait for the Graph calls under way, so their outcomes are in the ledger before the
        next owner reads it."""
        if not partitions:
            return
        self.buffer.revoke(partitions)
        for job in self.numbers.drain(lambda j: j.partition in partitions):
            self.buffer.release(job)
        pending = self.work.of(partitions)
        if pending:
            await asyncio.wait(pending, timeout=self.settings.send_graph_timeout_s + 5)
        for p in partitions:
            self.ledger.unload(p)
        self.buffer.forget(partitions)

    async def close(self) -> None:
        """No new Graph calls; wait for those under way (their outcomes written)."""
        self.graph.closing = True
        self.scheduler.close()
        tasks = self.work.all()
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.send_graph_timeout_s + 5)

    def backlog(self) -> int:
        return self.numbers.backlog()
