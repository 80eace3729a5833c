"""The lanes' records, in order, handed to the intake: transactional first, campaigns in turn.

Contract: ``LaneReader.on_records(messages)`` takes a batch from the worker's ``LaneConsumer``
(wapipe/edge/lane_consumer.py; confluent-kafka ``Message`` objects) and ``run()`` works through
what was taken: records of the ``first`` topics (the transactional request topics and retries)
before any campaign record, each decoded into a ``SendCommand`` and submitted to the intake with
an ``ack`` that moves its partition's committable offset (``InOrderOffsets``) once its outcome is
durable. Unreadable bytes, and a command the intake raised on, become a dead letter on
wa.send.dead and are acknowledged: one record never stops the lane. ``commit()`` hands the moved
offsets to the consumer (every ``commit_every_s``).

A campaign burst does not hold the event loop (a yield every ``yield_every_s`` of work) nor the
transactional records (they are taken from the consumer as they come, and go first), and nothing
piles up unread here: past ``raw_max`` records of one kind (campaign, or first) taken and not yet
read, that kind's topics are paused, and resumed at half.

A rebalance: ``revoked(tps)`` waits for the record being read if it is of those partitions (a
command must be queued, or not, before the dispatcher drops the partitions' jobs: queued after,
its next owner could send it too), drops their records not read yet (their next owner reads
them from the committed offset), lets the dispatcher finish with the partitions, and returns the
offsets to commit before they are given up.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from processors.send import records as R
from processors.send.acks import InOrderOffsets
from processors.send.writes import Write
from wapipe import log, topics as T
from wapipe.avro import SerdeError
from wapipe.deadletter import DeadLetter, Source
from wapipe.messages.send import SendCommand

if TYPE_CHECKING:
    from processors.send.app import Runtime

logger = log.get_logger(__name__)

TP = tuple[str, int]
BACKLOG = "backlog"  # the pause reason of topics read faster than the intake takes them


def dead_letter(m: Any, exc: Exception) -> Write:
    """The dead letter of a lane record (a confluent-kafka ``Message``) and why."""
    letter = DeadLetter(Source.of_kafka(m), str(exc)[:500], type(exc).__name__)
    return Write(T.SEND_DEAD, m.key(), None, letter)


@dataclass
class _Taken:
    """Records of one kind (``topics``) taken from the consumer and not read yet, and whether
    those topics are paused because there are too many."""

    topics: frozenset[str]
    records: deque[Any] = field(default_factory=deque)
    paused: bool = False


class LaneReader:
    def __init__(self, *, first: frozenset[str], campaign: frozenset[str], yield_every_s: float,
                 raw_max: int = 4000) -> None:
        self.first = first
        self.yield_every_s = yield_every_s
        self.raw_max = raw_max
        self.runtime: Runtime | None = None  # set once the worker's collaborators are up
        self.pause: Callable[[list[TP], str], None] = lambda tps, reason: None
        self.resume: Callable[[list[TP], str], None] = lambda tps, reason: None
        self.commit_offsets: Callable[[dict[TP, int]], None] = lambda offsets: None
        self.assignment: set[TP] = set()
        self.offsets = InOrderOffsets()
        self._urgent = _Taken(first)
        self._bulk = _Taken(campaign)
        self._reading: TP | None = None  # the partition of the record being read
        self._wake = asyncio.Event()

    # --- from the consumer --------------------------------------------------------------------
    def on_records(self, msgs: list[Any]) -> None:
        first, urgent, bulk = self.first, self._urgent.records, self._bulk.records
        for m in msgs:
            (urgent if m.topic() in first else bulk).append(m)
        for taken in (self._urgent, self._bulk):
            if len(taken.records) > self.raw_max and not taken.paused:
                taken.paused = True
                self.pause(self._assigned_of(taken), BACKLOG)
        self._wake.set()

    def _assigned_of(self, taken: _Taken) -> list[TP]:
        return [tp for tp in self.assignment if tp[0] in taken.topics]

    def assigned(self, tps: list[TP]) -> None:
        self.assignment |= set(tps)
        held = [tp for tp in tps for taken in (self._urgent, self._bulk) if taken.paused and tp[0] in taken.topics]
        if held:
            self.pause(held, BACKLOG)

    async def revoked(self, tps: list[TP], on_partitions: Callable[[set[int]], Any]) -> dict[TP, int]:
        """Stop reading ``tps``; ``on_partitions(partitions)`` (the dispatcher's revocation) is awaited
        before the offsets to commit are taken."""
        gone = set(tps)
        self.assignment -= gone
        while self._reading in gone:  # its command is queued (or refused) before the dispatcher lets go
            await asyncio.sleep(0.005)
        for q in (self._urgent.records, self._bulk.records):  # in place: run() holds these deques
            kept = [m for m in q if (m.topic(), m.partition()) not in gone]
            if len(kept) != len(q):
                q.clear()
                q.extend(kept)
        await on_partitions({p for _t, p in tps})
        offsets = self.offsets.committable(tps)
        self.offsets.forget(tps)
        return offsets

    def commit(self) -> None:
        """Commit when an offset moved: every partition's (a commit the broker refused, seen by
        nobody, is carried by the next one)."""
        if self.offsets.take():
            self.commit_offsets(self.offsets.committable(self.assignment))

    def held(self) -> int:
        """Records taken from the consumer and not read yet."""
        return len(self._urgent.records) + len(self._bulk.records)

    # --- the loop -----------------------------------------------------------------------------
    async def run(self) -> None:
        clock = asyncio.get_running_loop().time
        urgent, bulk, every = self._urgent.records, self._bulk.records, self.yield_every_s
        while True:
            await self._wake.wait()
            self._wake.clear()
            rt = self.runtime
            assert rt is not None, "records before the runtime: the consumer starts after it"
            turn = clock()
            while urgent or bulk:
                m = urgent.popleft() if urgent else bulk.popleft()
                self._reading = (m.topic(), m.partition())
                try:
                    await self._read(rt, m)
                finally:
                    self._reading = None
                if clock() - turn > every:
                    await asyncio.sleep(0)
                    turn = clock()
                    self._resume_backlog()
            self._resume_backlog()

    def _resume_backlog(self) -> None:
        for taken in (self._urgent, self._bulk):
            if taken.paused and len(taken.records) <= self.raw_max // 2:
                taken.paused = False
                self.resume(self._assigned_of(taken), BACKLOG)

    async def _read(self, rt: Runtime, m: Any) -> None:
        topic, partition = m.topic(), m.partition()
        if (topic, partition) not in self.assignment:
            return  # taken before its partition moved away: its new owner reads it
        entry = self.offsets.started((topic, partition), m.offset())
        done = self.offsets.done

        async def ack(entry: list = entry) -> None:
            done(entry)

        value = m.value()
        try:
            record = rt.serde.decode(value, R.COMMAND)
        except SerdeError as exc:
            await rt.writer.write(dead_letter(m, exc))
            done(entry)
            return
        try:
            await rt.dispatcher.intake.submit(SendCommand.from_avro(record), raw=value, partition=partition,
                                              topic=topic, ack=ack)
        except Exception as exc:  # a bug on one record must not stop the lane
            logger.exception("dispatch.admit_failed", topic=topic, offset=m.offset())
            await rt.writer.write(dead_letter(m, exc))
            done(entry)
