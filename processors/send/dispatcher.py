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
from wapipe import log

logger = log.get_logger(__name__)


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

    def log_stats(self) -> None:
        """One ``dispatcher.stats`` log line; the interval's worst latencies start again from 0."""
        st = self.stats
        logger.info("dispatcher.stats", backlog=self.backlog(), graph_calls=st.graph_calls,
                    in_flight=self.slots.in_use, admitted=st.accepted, rekeyed=self.intake.rekeyed,
                    queues={k: n.queue.size for k, n in self.numbers.by_id.items()},
                    throttled=st.throttled, outcomes=dict(st.outcomes), ledger=len(self.ledger),
                    intents_per_batch=round(st.ledger_writes / max(1, st.intent_batches), 2),
                    intent_ack_ms=round(1000 * st.ledger_write_s / max(1, st.ledger_writes), 1),
                    tx_to_admit_s=round(st.tx_to_admit, 3), tx_admit_to_call_s=round(st.tx_admit_to_call, 3),
                    reserve_to_ready_ms=round(1000 * st.reserve_to_ready_s / max(1, st.reserve_to_ready_n), 2),
                    reserve_to_ready_max_ms=round(1000 * st.reserve_to_ready_max, 1),
                    trip_ms=round(1000 * st.trip_s / max(1, st.trip_n), 1),
                    window_credit_ms={k: round(1000 * n.pacer.credit, 1) for k, n in self.numbers.by_id.items()},
                    pace_lost_ms={k: round(1000 * n.pacer.take_lost()) for k, n in self.numbers.by_id.items()},
                    start_waits=st.start_waits)
        st.tx_to_admit = st.tx_admit_to_call = st.reserve_to_ready_max = st.trip_s = st.reserve_to_ready_s = 0.0
        st.trip_n = st.reserve_to_ready_n = 0
