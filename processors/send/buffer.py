"""What the worker holds in memory, and backpressure in one place.

Contract:

* ``Buffer.take(job)`` / ``release(job)``: a job is *active* (queued or under way, by dedup key)
  from the moment it is queued until its outcome is durable; a campaign-lane job also counts as
  *held* against its partition's buffer while it is active.
* A stage that took a command but finds its partition full raises ``MessageRejected(partition)``
  (arroyo's signal). The intake turns it into ``Buffer.reject(partition)``: the partition's
  campaign topics stop being fetched. The command itself was taken — nothing is lost or replayed,
  and no lane agent waits, so no number waits behind another's backlog.
* Reading resumes in ``release`` (the partition held half its buffer or less) or ``idle`` (one of
  its numbers has nothing to send, while the worker holds fewer than ``most`` commands).

Only this class calls ``pause``/``resume``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator

from processors.send.lanes import Job
from wapipe import log
from wapipe.messages.send import TRANSACTIONAL

logger = log.get_logger(__name__)


class MessageRejected(Exception):
    """The command was taken, but its partition holds enough: stop reading it for now."""

    def __init__(self, partition: int) -> None:
        super().__init__(partition)
        self.partition = partition


class Buffer:
    def __init__(self, *, per_partition: int, most: int, pause: Callable[[int], None],
                 resume: Callable[[int], None]) -> None:
        """``pause(p)`` / ``resume(p)`` stop and restart fetching partition ``p`` of the campaign
        topics; ``per_partition``: campaign jobs held per partition before it may pause; ``most``:
        campaign jobs held by the worker before a partition pauses whatever its numbers hold."""
        self.per_partition = per_partition
        self.most = most
        self._pause = pause
        self._resume = resume
        self.paused: set[int] = set()
        self.revoked: set[int] = set()
        self._active: dict[str, Job] = {}  # key -> job queued or in flight in this process
        self.held: dict[int, int] = defaultdict(int)  # campaign-lane jobs held per partition
        self.held_by: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # ... per number
        self.total = 0

    def active(self, key: str) -> Job | None:
        return self._active.get(key)

    def take(self, job: Job) -> None:
        self._active[job.key] = job
        if job.lane != TRANSACTIONAL and not job.held:
            job.held = True
            self.held[job.partition] += 1
            self.held_by[job.partition][job.cmd.phone_number_id] += 1
            self.total += 1

    def full(self, job: Job) -> bool:
        """Whether ``job`` (just taken) filled its partition's buffer, which is still read."""
        p = job.partition
        return job.held and p not in self.paused and self.held[p] >= self.per_partition

    def numbers(self, partition: int) -> Iterator[str]:
        """The numbers holding campaign jobs from ``partition`` (lazily: a caller may stop early)."""
        return (pnid for pnid, n in self.held_by[partition].items() if n > 0)

    def release(self, job: Job) -> None:
        if self._active.get(job.key) is job:
            del self._active[job.key]
        if job.held:
            job.held = False
            p = job.partition
            self.held[p] -= 1
            self.held_by[p][job.cmd.phone_number_id] -= 1
            self.total -= 1
            if p in self.paused and self.held[p] <= self.per_partition // 2:
                self.paused.discard(p)
                if p not in self.revoked:
                    self._resume(p)

    def reject(self, rejected: MessageRejected) -> None:
        """The one place a partition is paused."""
        p = rejected.partition
        if p not in self.paused:
            self.paused.add(p)
            self._pause(p)

    def idle(self, partition: int | None) -> None:
        """A number of ``partition`` has nothing to send: read on from its partition if that was
        paused for other numbers' (or paused campaigns') backlog, up to ``most`` jobs held."""
        p = partition
        if p is not None and p in self.paused and p not in self.revoked and self.total < self.most:
            self.paused.discard(p)
            self._resume(p)
            logger.info("dispatcher.partition_resumed_for_idle_number", partition=p, held=self.held[p])

    def revoke(self, partitions: set[int]) -> None:
        self.revoked |= partitions

    def forget(self, partitions: set[int]) -> None:
        """Revoked partitions' pauses die with their assignment."""
        self.paused -= partitions
