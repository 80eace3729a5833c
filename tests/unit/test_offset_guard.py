"""OffsetGuard: a jump over offsets of a partition is repaired by seeking back once; records in
order, redeliveries and a second jump over the same offset are handled normally."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple

from wapipe.offset_guard import OffsetGuard


class TP(NamedTuple):
    topic: str
    partition: int


@dataclass
class Consumer:
    """The two things of Faust's consumer the guard uses: committed offsets and seek."""

    _committed_offset: dict = field(default_factory=dict)
    seeks: list = field(default_factory=list)

    async def seek(self, tp, offset):
        self.seeks.append((tp, offset))


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


def test_a_jump_in_the_middle_seeks_back_to_the_first_missing_offset():
    tp, c = TP("t", 0), Consumer({})
    g = OffsetGuard("x")
    handled = run(g, c, tp, [0, 1, 2, 7, 8, 3, 4, 5, 6, 7, 8])
    assert c.seeks == [(tp, 3)]
    # 8 was already in the buffer after the seek: handled once there, and again when redelivered.
    assert handled == [0, 1, 2, 8, 3, 4, 5, 6, 7, 8]


def test_a_second_jump_over_the_same_offsets_is_a_real_gap():
    tp, c = TP("t", 0), Consumer({})
    g = OffsetGuard("x")
    assert run(g, c, tp, [0, 1, 5, 5, 6]) == [0, 1, 5, 6]
    assert c.seeks == [(tp, 2)]


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
