"""Admission: a decided command becomes a job in its number's queue.

Contract: ``submit(job)`` queues the job (taken by the ``Buffer``, its number's loop started) and
returns; it raises ``MessageRejected(partition)`` — after taking the job — when the job filled its
partition's campaign buffer and pausing the partition starves none of its numbers: every number
holding campaign jobs from it has 2 s of sendable work queued (a paused campaign's jobs are not
sendable), or the worker holds ``send_held_max`` campaign jobs.
"""

from __future__ import annotations

from typing import Any

from processors.send.buffer import Buffer, MessageRejected
from processors.send.lanes import Job
from processors.send.numbers import Numbers
from processors.send.scheduler import Scheduler


class Admission:
    def __init__(self, *, numbers: Numbers, buffer: Buffer, scheduler: Scheduler, campaigns: Any) -> None:
        self.numbers = numbers
        self.buffer = buffer
        self.scheduler = scheduler
        self.campaigns = campaigns

    def submit(self, job: Job) -> None:
        self.scheduler.watch(self.numbers.enqueue(job))
        if self.buffer.full(job) and self._may_pause(job.partition):
            raise MessageRejected(job.partition)

    def _may_pause(self, partition: int) -> bool:
        if self.buffer.total >= self.buffer.most:
            return True
        by_id, paused = self.numbers.by_id, self.campaigns.paused
        for pnid in self.buffer.numbers(partition):
            n = by_id.get(pnid)
            if n is None or n.sendable(paused) < self.numbers.enough(n):
                return False
        return True
