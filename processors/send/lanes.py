"""Per-number queues with two lanes, in the manner of courier's channel queues.

* The transactional lane always goes first: an OTP never waits behind a campaign.
* The campaign lane is fair: one queue per campaign, served round-robin, so a 100k campaign
  does not starve a 100-message one; paused campaigns are skipped, not dropped.
* A job that may not go yet (its recipient's pair rate, a retry's ``not_before``) waits in a
  timed heap and rejoins the front of its lane when due, without blocking the others.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wapipe.messages.send import TRANSACTIONAL, SendCommand

@dataclass(eq=False)
class Job:
    key: str  # tenant_id/idempotency_key
    cmd: SendCommand
    partition: int
    lane: str
    attempt: int = 0  # Graph calls already made for this key
    not_before: float = 0.0  # wall-clock seconds
    ack: Callable[[], Any] | None = None  # acks the source record (after the outcome is durable)
    enqueued: float = 0.0  # monotonic, for latency figures
    source: str = ""
    raw: bytes = b""  # the command as read, for wa.send.retry / wa.send.dead
    held: bool = False  # counted against its partition's buffer
    checked: float = 0.0  # monotonic instant it was last validated
    reserved_at: float = 0.0  # monotonic instant its pacing slot was reserved

    @property
    def campaign(self) -> str:
        return self.cmd.campaign_id or ""

    @property
    def subject(self) -> str:
        return self.cmd.subject_id


@dataclass
class NumberQueue:
    tx: deque = field(default_factory=deque)
    campaigns: OrderedDict = field(default_factory=OrderedDict)  # campaign id -> deque[Job]
    waiting: list = field(default_factory=list)  # heap (due, seq, job)
    _seq: Any = field(default_factory=itertools.count)
    size: int = 0
    tenant: str = ""  # the number's tenant (its share of the Graph calls in flight: slots.py)
    partition: int | None = None  # the number's partition (all its commands are read from it)

    def push(self, job: Job, *, front: bool = False) -> None:
        self.size += 1
        self._put(job, front)

    def _put(self, job: Job, front: bool) -> None:
        if job.lane == TRANSACTIONAL:
            q = self.tx
        else:
            q = self.campaigns.get(job.campaign)
            if q is None:
                q = self.campaigns[job.campaign] = deque()
        (q.appendleft if front else q.append)(job)

    def defer(self, job: Job, due: float) -> None:
        """Hold ``job`` until ``due`` (monotonic seconds); it stays counted in ``size``."""
        heapq.heappush(self.waiting, (due, next(self._seq), job))

    def _release(self, now: float) -> None:
        w = self.waiting
        while w and w[0][0] <= now:
            _, _, job = heapq.heappop(w)
            self._put(job, True)

    def next_due(self) -> float | None:
        return self.waiting[0][0] if self.waiting else None

    def pop(self, now: float, *, paused: Callable[[str], bool] = lambda c: False) -> Job | None:
        """The next job to send: transactional first, then campaigns round-robin."""
        self._release(now)
        if self.tx:
            self.size -= 1
            return self.tx.popleft()
        for _ in range(len(self.campaigns)):
            cid, q = next(iter(self.campaigns.items()))
            self.campaigns.move_to_end(cid)  # rotate: the next campaign is served next
            if not q:
                del self.campaigns[cid]
                continue
            if cid and paused(cid):
                continue
            self.size -= 1
            return q.popleft()
        return None

    def has_ready(self, now: float, *, paused: Callable[[str], bool] = lambda c: False) -> bool:
        self._release(now)
        return bool(self.tx) or any(q and not (cid and paused(cid)) for cid, q in self.campaigns.items())

    def drain(self, predicate: Callable[[Job], bool]) -> list[Job]:
        """Remove and return every job matching ``predicate`` (revoked partitions, stopped campaigns)."""
        out: list[Job] = []
        keep = deque()
        for j in self.tx:
            (out if predicate(j) else keep).append(j)
        self.tx = keep
        for cid in list(self.campaigns):
            q = self.campaigns[cid]
            keep = deque()
            for j in q:
                (out if predicate(j) else keep).append(j)
            if keep:
                self.campaigns[cid] = keep
            else:
                del self.campaigns[cid]
        waiting = []
        for item in self.waiting:
            (out.append(item[2]) if predicate(item[2]) else waiting.append(item))
        heapq.heapify(waiting)
        self.waiting = waiting
        self.size -= len(out)
        return out
