"""The worker commits a partition's records in offset order, whatever order their work finishes
in, so a request whose work is still open is never committed past."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.send.acks import InOrderOffsets


@settings(max_examples=300, deadline=None)
@given(st.permutations(range(12)), st.sets(st.integers(0, 11), max_size=3), st.integers(0, 1000))
def test_offsets_follow_read_order_and_stop_at_a_record_not_done(finish_order, never_done, base):
    offs = InOrderOffsets()
    entries = [offs.started(f"p{i % 2}", base + i // 2) for i in range(12)]
    taken: dict = {}
    for i in finish_order:
        if i not in never_done:
            offs.done(entries[i])
            taken.update(offs.take())
    popped = 0
    for tp in ("p0", "p1"):
        stuck = [i // 2 for i in never_done if f"p{i % 2}" == tp]
        done_run = min(stuck, default=6)  # records 0..done_run-1 of the partition are done
        popped += done_run
        expect = base + done_run if done_run else None
        assert taken.get(tp) == expect, (tp, taken, stuck)
        assert offs.committable([tp]).get(tp) == expect
    assert offs.waiting() == 12 - popped
    offs.forget(["p0", "p1"])
    assert offs.waiting() == 0 and offs.committable(["p0", "p1"]) == {} and offs.take() == {}
