"""Every agent shows the guard each record before handling it; the guard repairs the records
Faust skipped.

Contract (for topics with contiguous offsets: no compaction, no transactions):
* ``OffsetGuard.admit(consumer, event)`` → True: handle the record. False: skip it — either a
  redelivery of a record handled in this assignment, or a record after a jump in offsets; then the
  partition is sought back (in the consumer's thread, ``seek_wait``) to the first missing offset,
  and again every ``reseek_s`` until that record arrives; after ``give_up_s`` the jump is taken as
  a real gap and logged as an error (``faust.gap_accepted``).
* The first record after an assignment is checked against the group's committed offset read from
  the broker when the partitions were assigned (``broker_committed`` → ``assigned``), not against
  Faust's own bookkeeping.
* ``watch_stalls``: every few seconds a partition that has records on the broker but delivered
  none for ``stall_s`` (and is not paused, recovering or under repair) is repaired the same way.

Why each rule exists, with the incidents that found it: docs/kafka-edge.md, "The offset guard".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wapipe.edge import faust_internals as fi
from wapipe.edge.group_start import committed_offsets, end_offsets
from wapipe.log import get_logger
from wapipe.edge.clients import admin_client

log = get_logger(__name__)


@dataclass
class _Repair:
    missing: int
    since: float
    task: asyncio.Task | None = None


@dataclass
class OffsetGuard:
    """Per partition: the highest offset handled in this assignment, and the open repairs."""

    name: str
    reseek_s: float = 0.25
    give_up_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _last: dict[Any, int] = field(default_factory=dict)
    _open: dict[Any, _Repair] = field(default_factory=dict)
    _gaps: dict[Any, list[tuple[int, int]]] = field(default_factory=dict)  # jumps taken as real gaps: offsets
    _committed: dict[Any, int] = field(default_factory=dict)  # the broker's, read at assignment
    stall_s: float = 20.0
    _heard: dict[Any, float] = field(default_factory=dict)  # when a partition last showed a record (or had none to show)
    _tried: dict[Any, tuple[int, int]] = field(default_factory=dict)  # (expected, end) of its last stall repair
    repairs: int = 0
    redeliveries: int = 0

    def missing_before(self, consumer: Any, tp: Any, offset: int) -> int | None | object:
        """The first offset skipped before ``offset`` (the record must be left aside and the
        partition sought back to it); ``SEEN`` (a redelivery of a handled record: skip it); or
        None: handle the record."""
        repair = self._open.get(tp)
        if repair is not None and offset < repair.missing:
            return None if self._in_gap(tp, offset) else SEEN  # handled before the jump
        if repair is not None:
            if offset > repair.missing and self.clock() - repair.since < self.give_up_s:
                return repair.missing  # a stale record from before the seek: aside, it comes again
            if offset > repair.missing:
                log.error("faust.gap_accepted", agent=self.name, topic=getattr(tp, "topic", None),
                          partition=getattr(tp, "partition", None), first_missing=repair.missing, received=offset)
                self._gaps.setdefault(tp, []).append((repair.missing, offset - 1))
            self._close(tp)
            self._last[tp] = max(offset, self._last.get(tp, offset))
            return None
        last = self._last.get(tp)
        if last is None:
            committed = self._committed.get(tp)
            if committed is None:  # not read at assignment: Faust's bookkeeping, if it has it
                committed = fi.committed_offset(consumer, tp)
            last = committed - 1 if committed is not None and committed >= 0 else None
        if last is not None and offset <= last and not self._in_gap(tp, offset):
            return SEEN
        if last is not None and offset > last + 1 and not self._in_gap(tp, last + 1):
            return last + 1
        if last is None or offset > last:
            self._last[tp] = offset
        return None

    def _in_gap(self, tp: Any, offset: int) -> bool:
        return any(lo <= offset <= hi for lo, hi in self._gaps.get(tp, ()))

    async def repair(self, consumer: Any, tp: Any, missing: int, offset: int) -> None:
        """Seek ``tp`` back to ``missing`` (Faust delivers from there again), and again every
        ``reseek_s`` until it has."""
        if tp in self._open:
            return
        self.repairs += 1
        log.warning("faust.skipped_records", agent=self.name, topic=tp.topic, partition=tp.partition,
                    first_missing=missing, received=offset, repairs=self.repairs)
        repair = self._open[tp] = _Repair(missing, self.clock())
        await _seek(consumer, tp, missing)
        repair.task = asyncio.ensure_future(self._reseek(consumer, tp, repair))

    async def _reseek(self, consumer: Any, tp: Any, repair: _Repair) -> None:
        while self._open.get(tp) is repair and self.clock() - repair.since < self.give_up_s + self.reseek_s:
            await asyncio.sleep(self.reseek_s)
            if self._open.get(tp) is repair:
                try:
                    await _seek(consumer, tp, repair.missing)
                except Exception as exc:  # revoked meanwhile: forget() closes the repair
                    log.warning("faust.reseek_failed", agent=self.name, error=repr(exc))

    def _close(self, tp: Any) -> None:
        repair = self._open.pop(tp, None)
        if repair is not None and repair.task is not None and repair.task is not asyncio.current_task():
            repair.task.cancel()

    def forget(self, tps: Any) -> None:
        """Partitions revoked or (re)assigned: the next record is checked against the committed offset."""
        for tp in tps:
            self._last.pop(tp, None)
            self._committed.pop(tp, None)
            self._heard.pop(tp, None)
            self._tried.pop(tp, None)
            self._close(tp)

    def expected(self, tp: Any) -> int | None:
        """The next offset of ``tp`` to come: after the last handled, else the committed one."""
        last = self._last.get(tp)
        return last + 1 if last is not None else self._committed.get(tp)

    def stalled(self, ends: Mapping[Any, int], quiet: Iterable[Any] = ()) -> dict[Any, int]:
        """Partitions (of ``ends``: each one's end offset on the broker) that have records to deliver
        and delivered none for ``stall_s``: the offset to seek each to. ``quiet``: partitions not
        expected to deliver now (paused); their clock restarts."""
        now, quiet = self.clock(), set(quiet)
        out = {}
        for tp, end in ends.items():
            expected = self.expected(tp)
            repairing = tp in self._open and not (self._open[tp].task and self._open[tp].task.done())
            if (tp in quiet or repairing or expected is None or end <= expected
                    or self._tried.get(tp) == (expected, end)):  # repaired from there once, nothing came
                self._heard[tp] = now
            elif now - self._heard.setdefault(tp, now) >= self.stall_s:
                out[tp] = expected
        return out

    def rested(self, tps: Iterable[Any]) -> None:
        """``tps`` were not expected to deliver until now (tables recovering, the broker away)."""
        now = self.clock()
        for tp in tps:
            self._heard[tp] = now

    async def repair_stalls(self, consumer: Any, ends: Mapping[Any, int], quiet: Iterable[Any] = ()) -> int:
        """``stalled`` partitions sought back to their expected offset (as for a skip); how many."""
        stalled = self.stalled(ends, quiet)
        for tp, expected in stalled.items():
            log.warning("faust.partition_stalled", agent=self.name, topic=tp.topic, partition=tp.partition,
                        expected=expected, end=ends[tp], quiet_s=round(self.clock() - self._heard[tp], 1))
            self._tried[tp] = (expected, ends[tp])
            self._close(tp)  # a repair that gave up waiting
            try:
                await self.repair(consumer, tp, expected, ends[tp])
            except Exception as exc:  # revoked meanwhile: its next owner reads it
                log.warning("faust.stall_repair_failed", agent=self.name, error=repr(exc)[:300])
        return len(stalled)

    def assigned(self, committed: Mapping[Any, int | None]) -> None:
        """The broker's committed offsets of newly assigned partitions (``broker_committed``)."""
        for tp, offset in committed.items():
            if offset is not None and offset >= 0:
                self._committed[tp] = offset

    async def admit(self, consumer: Any, event: Any) -> bool:
        """True: handle ``event``. False: skip it, either because it was handled already (a
        redelivery) or because records before it were skipped by Faust; then it was left aside
        and the partition sought back (it will come again)."""
        m = event.message
        self._heard[m.tp] = self.clock()
        missing = self.missing_before(consumer, m.tp, m.offset)
        if missing is None:
            return True
        if missing is SEEN:
            self.redeliveries += 1
            return False
        await self.repair(consumer, m.tp, missing, m.offset)
        return False


SEEN = object()  # missing_before's answer for a record handled already


async def _seek(consumer: Any, tp: Any, offset: int) -> None:
    """Seek in the consumer's own thread (Faust's ``seek_wait``), never from the event loop: Faust's
    ``Consumer.seek`` calls aiokafka's ``seek`` from the loop's thread while the consumer thread may
    be iterating the fetch buffer it changes (a seek made that way crashed a worker with a
    ``KeyError`` in aiokafka's ``Fetcher.fetched_records``). ``seek_wait`` also sets Faust's read
    offset, as ``seek`` does."""
    await consumer.seek_wait({tp: offset})


@dataclass
class BrokerEnds:
    """End offsets read through an admin client that is replaced after a failure: librdkafka's
    admin client that saw the broker restart can keep answering FENCED_LEADER_EPOCH for good (its
    cached leader epochs are older than the new broker's; measured: 12 of 12 tries over 60 s after
    a restart, while a new client answered at once). A failure is logged once per episode, and the
    recovery once."""

    bootstrap: str
    make_admin: Callable[[str], Any] = admin_client
    _admin: Any = None
    _failing_since: float | None = None

    def read(self, partitions: list[tuple[str, int]], timeout: float) -> dict[tuple[str, int], int] | None:
        admin = self._admin if self._admin is not None else self.make_admin(self.bootstrap)
        try:
            got = end_offsets(admin, partitions, timeout)
        except Exception as exc:
            self._admin = None  # a fresh client next time
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning("offset_guard.ends_unavailable", error=repr(exc)[:300])
            return None
        self._admin = admin
        if self._failing_since is not None:
            log.info("offset_guard.ends_available_again", after_s=round(time.monotonic() - self._failing_since, 1))
            self._failing_since = None
        return got


async def broker_ends(ends: BrokerEnds, tps: Iterable[Any], timeout: float = 10.0) -> dict[Any, int]:
    """The end offsets of ``tps`` (Faust TPs) on the broker, in a thread. On failure: an empty map
    (nothing is judged stalled)."""
    tps = list(tps)
    if not tps:
        return {}
    got = await asyncio.to_thread(ends.read, [(tp.topic, tp.partition) for tp in tps], timeout)
    if got is None:
        return {}
    return {tp: got[(tp.topic, tp.partition)] for tp in tps if (tp.topic, tp.partition) in got}


async def broker_committed(bootstrap: str, group_id: str, tps: Iterable[Any],
                           timeout: float = 10.0) -> dict[Any, int | None]:
    """The group's committed offsets of ``tps`` (Faust TPs), asked of the broker without joining the
    group (``group_start.committed_offsets``), in a thread. On failure: an empty map (the guard then
    falls back to Faust's bookkeeping), logged."""
    tps = list(tps)
    if not tps:
        return {}

    def fetch() -> dict[Any, int | None]:
        got = committed_offsets(admin_client(bootstrap), group_id, [(tp.topic, tp.partition) for tp in tps], timeout)
        return {tp: got.get((tp.topic, tp.partition)) for tp in tps}

    try:
        return await asyncio.to_thread(fetch)
    except Exception as exc:
        log.warning("offset_guard.committed_unavailable", group=group_id, error=repr(exc)[:300])
        return {}


def watch_stalls(app: Any, guard: OffsetGuard, bootstrap: str, topics: Iterable[str], *,
                 ready: Callable[[], bool] = lambda: True, quiet: Callable[[], Iterable[Any]] = lambda: (),
                 interval: float = 5.0, require: tuple[str, ...] = ()) -> None:
    """Every ``interval``: the app's assigned partitions of ``topics`` checked for a stall
    (``OffsetGuard.stalled``) against their end offsets on the broker, and repaired. Partitions
    Faust paused, or ``quiet()`` names, and all of them while tables recover, until ``ready()``
    (the agents wait for their own start) and while the broker does not answer, are not judged.
    First, once: what of Faust's internals the guards reach is gone is logged (``require``: those
    whose absence is fatal, ``faust_internals.check_shape``)."""
    topics = frozenset(topics)
    reader = BrokerEnds(bootstrap)
    fi.check_shape(require=require)

    @app.timer(interval=interval, name=f"{guard.name}.watch_stalls")
    async def watch() -> None:
        consumer = app.consumer
        tps = [tp for tp in consumer.assignment() if tp.topic in topics]
        ends = {} if app.in_recovery or not ready() else await broker_ends(reader, tps)
        if len(ends) < len(tps):  # not judged then, nor while the broker does not answer
            guard.rested(tps)
            return
        await guard.repair_stalls(consumer, ends, fi.paused_partitions(consumer) | set(quiet()))
