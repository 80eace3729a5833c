"""The intake acknowledges a partition's records in offset order, whatever order their writes
finish in, so a request whose write is still retrying is never committed past."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.send.acks import InOrderAcks


@dataclass(frozen=True)
class _Msg:
    tp: str
    offset: int


@dataclass(frozen=True)
class _Event:
    message: _Msg


@settings(max_examples=300, deadline=None)
@given(st.permutations(range(12)), st.sets(st.integers(0, 11), max_size=3))
def test_acks_follow_offset_order_and_stop_at_a_record_not_done(finish_order, never_done):
    acked: list[tuple[str, int]] = []

    async def ack(ev):
        acked.append((ev.message.tp, ev.message.offset))

    async def run():
        acks = InOrderAcks(ack)
        entries = [acks.started(_Event(_Msg(f"p{i % 2}", i // 2))) for i in range(12)]
        for i in finish_order:
            if i not in never_done:
                await acks.done(entries[i])
        return acks

    acks = asyncio.run(run())
    for tp in ("p0", "p1"):
        mine = [o for t, o in acked if t == tp]
        stuck = [i // 2 for i in never_done if f"p{i % 2}" == tp]
        assert mine == list(range(min(stuck, default=6))), (tp, mine, stuck)
    assert acks.waiting() == 12 - len(acked)
    acks.forget(["p0", "p1"])
    assert acks.waiting() == 0
