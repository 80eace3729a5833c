"""OffsetGuard: a jump over offsets of a partition is repaired by seeking back, leaving later records
aside (and seeking again) until the missing one comes; records in order pass; redeliveries of
handled records are skipped; a jump whose records never come is, after ``give_up_s``, a real gap."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from wapipe.edge.offset_guard import OffsetGuard


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Consumer:
    """The two things of Faust's consumer the guard uses: committed offsets and seek."""

    _committed_offset: dict = field(default_factory=dict)
    seeks: list = field(default_factory=list)

    async def seek_wait(self, partitions):
        self.seeks.extend(partitions.items())


@dataclass
class Message:
    tp: TP
    offset: int


@dataclass
class Event:
    message: Message


def run(guard: OffsetGuard, consumer: Consumer, tp: TP, offsets: list[int]) -> list[int]:
    async def go():
        return [o for o in offsets if await guard.admit(consumer, Event(Message(tp, o)))]

    return asyncio.run(go())


def test_records_in_order_pass_and_nothing_is_sought():
    tp, c = TP("t", 0), Consumer({TP("t", 0): 10})
    assert run(OffsetGuard("x"), c, tp, [10, 11, 12, 13]) == [10, 11, 12, 13]
    assert c.seeks == []


def test_first_record_past_the_committed_offset_seeks_back_to_it():
    tp, c = TP("t", 1), Consumer({TP("t", 1): 346})
    g = OffsetGuard("x")
    # Faust delivered 353 first (346..352 skipped); after the seek it delivers 346.. and 353 again.
    handled = run(g, c, tp, [353, 346, 347, 348, 349, 350, 351, 352, 353, 354])
    assert c.seeks == [(tp, 346)]
    assert handled == [346, 347, 348, 349, 350, 351, 352, 353, 354]
    assert g.repairs == 1


def test_a_jump_in_the_middle_seeks_back_and_leaves_later_records_aside_until_it_comes():
    tp, c = TP("t", 0), Consumer({})
    g = OffsetGuard("x")
    handled = run(g, c, tp, [0, 1, 2, 7, 8, 3, 4, 5, 6, 7, 8])
    assert c.seeks == [(tp, 3)]
    # 8 was already in Faust's batch after the seek: left aside too, it comes again after 3..7.
    assert handled == [0, 1, 2, 3, 4, 5, 6, 7, 8]


def test_a_jump_whose_records_never_come_is_a_real_gap_after_give_up_s():
    tp, c = TP("t", 0), Consumer({})
    now = [0.0]
    g = OffsetGuard("x", give_up_s=30.0, clock=lambda: now[0])
    assert run(g, c, tp, [0, 1, 5, 5, 6]) == [0, 1]  # 2..4 missing: 5 and 6 wait for them
    now[0] = 31.0
    assert run(g, c, tp, [5, 6, 7]) == [5, 6, 7]
    assert run(g, c, tp, [2]) == [2]  # a late redelivery is still handled (safe)
    assert c.seeks == [(tp, 2)]


class FaustFetch:
    """Faust's fetch loop (faust-streaming 0.15 ``Consumer._drain_messages``) as far as the guard
    is concerned: batches fetched from a position; a record is delivered only if its offset is at
    least the read offset, which is then set to it *after* the agent saw it; ``seek`` moves the
    position and the read offset, but the batch already fetched goes on being delivered."""

    def __init__(self, tp: TP, committed: int, position: int, end: int, batch: int = 8) -> None:
        self.tp, self.position, self.read, self.end, self.batch = tp, position, position, end, batch
        self._committed_offset = {tp: committed}
        self.seeks: list = []

    async def seek_wait(self, partitions):
        for tp, offset in partitions.items():
            self.seeks.append((tp, offset))
            self.position = self.read = offset

    async def run(self, guard: OffsetGuard, seconds: float = 5.0) -> list[int]:
        handled: list[int] = []
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline:
            if self.position >= self.end:
                await asyncio.sleep(0.01)  # nothing new: Faust polls again
                continue
            batch = list(range(self.position, min(self.end, self.position + self.batch)))
            self.position = batch[-1] + 1
            for o in batch:
                if o < self.read:
                    continue  # Faust: "DROPPED MESSAGE ROFF"
                if await guard.admit(self, Event(Message(self.tp, o))):
                    handled.append(o)
                self.read = o
                await asyncio.sleep(0)
        return handled


def test_records_faust_skipped_come_back_although_its_stale_batch_overwrites_the_seek():
    """The SIGKILL test's failure: committed 190, Faust delivered 208 first. One seek was undone by
    the rest of Faust's batch (each delivery sets its read offset past 190 again) and 190..207 were
    dropped on the re-fetch, for good. Seeking again until 190 comes repairs it."""
    tp = TP("wa.send.accepted", 2)
    f = FaustFetch(tp, committed=190, position=208, end=260)
    g = OffsetGuard("x", reseek_s=0.05)
    handled = asyncio.run(f.run(g, seconds=2.0))
    assert handled == list(range(190, 260))  # each once, in order once repaired
    assert g.repairs == 1 and len(f.seeks) >= 2
def test_a_redelivered_record_is_not_handled_twice():
    """Faust re-delivers records around seeks and rebalances; a dead letter written for each
    delivery would be doubled (make demo: 3 garbage commands, 6 dead letters)."""
    tp, c = TP("t", 0), Consumer({TP("t", 0): 5})
    g = OffsetGuard("x")
    assert run(g, c, tp, [5, 6, 7]) == [5, 6, 7]
    assert run(g, c, tp, [6, 7, 8, 3]) == [8]  # 3: below the committed offset, handled before
    assert g.redeliveries == 3 and c.seeks == []


def test_partitions_are_independent_and_forget_restarts_from_the_committed_offset():
    a, b = TP("t", 0), TP("t", 1)
    c = Consumer({a: 0, b: 100})
    g = OffsetGuard("x")
    assert run(g, c, a, [0, 1]) == [0, 1]
    assert run(g, c, b, [100, 101]) == [100, 101]
    g.forget([b])
    c._committed_offset[b] = 102
    assert run(g, c, b, [102]) == [102]
    assert run(g, c, a, [2]) == [2]
    assert c.seeks == []


def test_without_a_committed_offset_the_first_record_is_taken_as_the_start():
    tp, c = TP("t", 0), Consumer({})
    assert run(OffsetGuard("x"), c, tp, [40, 41]) == [40, 41]
    assert c.seeks == []


def test_the_committed_offset_read_at_assignment_catches_a_first_record_past_it():
    # make demo: wa.send.requested p1 committed at 3900; Faust's own bookkeeping had nothing for
    # it when the first record (3930) arrived, so 3900..3929 were lost without a trace.
    tp, c = TP("t", 1), Consumer({})
    g = OffsetGuard("x")
    g.forget([tp])
    g.assigned({tp: 3900})
    # after the seek Faust delivers 3900.. again
    assert run(g, c, tp, [3930, *range(3900, 3932)]) == list(range(3900, 3932))
    assert c.seeks == [(tp, 3900)]


def test_the_offset_read_at_assignment_wins_over_fausts_bookkeeping_and_forget_drops_it():
    tp = TP("t", 0)
    c = Consumer({tp: 3931})  # Faust's view moved past records nobody handled
    g = OffsetGuard("x")
    g.assigned({tp: 3900, TP("t", 2): None})
    assert g.missing_before(c, tp, 3930) == 3900
    g.forget([tp])  # revoked: the next assignment reads it again; until then Faust's view is used
    assert g.missing_before(c, tp, 3931) is None


def test_a_partition_whose_last_records_were_skipped_is_repaired_from_its_end_offset():
    """The two-worker SIGKILL test's stall: a taken-over partition's consumer position stood at its
    end while Faust's read offset was the committed one, so nothing was delivered and no later
    record came to show the gap (105 commands unsent). Comparing the expected offset with the
    partition's end on the broker finds it; the repair seeks back."""
    tp = TP("wa.send.accepted", 2)

    async def go(watching: bool) -> tuple[list[int], list]:
        f = FaustFetch(tp, committed=190, position=260, end=260)
        f.read = 190
        g = OffsetGuard("x", reseek_s=0.05, stall_s=0.3)
        g.assigned({tp: 190})

        async def watch() -> None:
            while True:
                await g.repair_stalls(f, {tp: f.end})
                await asyncio.sleep(0.05)

        w = asyncio.ensure_future(watch()) if watching else None
        handled = await f.run(g, seconds=1.5)
        if w is not None:
            w.cancel()
        return handled, f.seeks

    assert asyncio.run(go(watching=False)) == ([], [])  # the stall, as seen
    handled, seeks = asyncio.run(go(watching=True))
    assert handled == list(range(190, 260)) and seeks[0] == (tp, 190)


def test_only_partitions_with_records_to_deliver_and_none_delivered_for_stall_s_are_stalled():
    now = [0.0]
    g = OffsetGuard("x", stall_s=20.0, clock=lambda: now[0])
    busy, done, paused, fresh, unknown = (TP("t", p) for p in range(5))
    g.assigned({busy: 10, done: 50, paused: 10, fresh: 10})
    ends = {busy: 100, done: 50, paused: 100, fresh: 100, unknown: 100}
    assert g.stalled(ends, quiet=[paused]) == {}  # the clocks start
    c = Consumer()
    now[0] = 19.0
    run(g, c, fresh, [10, 11])  # delivering
    now[0] = 25.0
    # caught up (done), paused, delivering recently (fresh), no expected offset (unknown): not stalled
    assert g.stalled(ends, quiet=[paused]) == {busy: 10}
    ends[done] = 51  # a new record at a caught-up partition: its clock started at the last look
    now[0] = 44.0
    assert g.stalled(ends, quiet=[paused]) == {busy: 10, fresh: 12}
    now[0] = 46.0
    assert g.stalled(ends, quiet=[paused]) == {busy: 10, done: 50, fresh: 12}


def test_a_stall_repair_that_brought_nothing_is_not_repeated_until_the_partition_moves():
    now = [0.0]
    tp, c = TP("t", 0), Consumer()
    g = OffsetGuard("x", stall_s=1.0, give_up_s=2.0, reseek_s=0.01, clock=lambda: now[0])
    g.assigned({tp: 7})

    async def go() -> list[int]:
        counts = []
        for t in (0.0, 1.5, 2.0, 5.0, 9.0):
            now[0] = t
            counts.append(await g.repair_stalls(c, {tp: 8}))
            await asyncio.sleep(0.05)  # the reseek task gives up (past give_up_s)
        now[0] = 9.5
        counts.append(await g.repair_stalls(c, {tp: 9}))  # a new record: judged again from the last look
        now[0] = 10.5
        counts.append(await g.repair_stalls(c, {tp: 9}))
        return counts

    assert asyncio.run(go()) == [0, 1, 0, 0, 0, 0, 1]
    assert c.seeks[0] == (tp, 7)


def test_partitions_rested_while_the_broker_was_away_are_judged_from_then():
    now = [0.0]
    tp = TP("t", 0)
    g = OffsetGuard("x", stall_s=20.0, clock=lambda: now[0])
    g.assigned({tp: 10})
    assert g.stalled({tp: 50}) == {}
    now[0] = 30.0
    g.rested([tp])  # the broker did not answer until now
    assert g.stalled({tp: 50}) == {}
    now[0] = 50.0
    assert g.stalled({tp: 50}) == {tp: 10}
