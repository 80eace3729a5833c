"""The lane reader against its contract, with real Avro and the records a consumer hands over:
transactional topics and retries before campaign records, in order per partition; a campaign
read-ahead pauses and resumes its topics; poison records become dead letters and never stop the
lane nor hold the offset; a revocation drops what was not read and commits only what was done."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings, strategies as st

from processors.send import records as R
from processors.send.lane_reader import BACKLOG, LaneReader
from tests.unit.commands import command
from wapipe.avro import AvroSerde
from wapipe.config import Settings

TX, BULK, RETRY = "wa.send.requested", "wa.send.requested.bulk", "wa.send.retry"
SERDE = AvroSerde.from_settings(Settings())


@dataclass
class Msg:
    """What a confluent-kafka ``Message`` offers the reader."""

    t: str
    p: int
    o: int
    v: bytes | None
    k: bytes | None = b"k"

    def topic(self) -> str:
        return self.t

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o

    def value(self) -> bytes | None:
        return self.v

    def key(self) -> bytes | None:
        return self.k

    def timestamp(self) -> tuple[int, int]:
        return (1, 0)


def good(topic: str, p: int, o: int) -> Msg:
    cmd = command(command_id=f"{topic}/{p}/{o}", idempotency_key=f"{topic}/{p}/{o}")
    return Msg(topic, p, o, SERDE.encode(R.COMMAND, cmd.to_avro()))


@dataclass
class Intake:
    """Records each command; its outcome (the ack) is left to the test."""

    seen: list[str] = field(default_factory=list)
    acks: dict[str, Any] = field(default_factory=dict)
    raise_on: set[str] = field(default_factory=set)

    async def submit(self, cmd, *, raw, partition, topic, ack) -> None:
        if cmd.command_id in self.raise_on:
            raise RuntimeError("a bug on one record")
        self.seen.append(cmd.command_id)
        self.acks[cmd.command_id] = ack


@dataclass
class Writer:
    letters: list[Any] = field(default_factory=list)

    async def write(self, w) -> None:
        self.letters.append(w)


@dataclass
class Runtime:
    serde: Any
    writer: Writer
    dispatcher: Any


@dataclass
class Dispatcher:
    intake: Intake
    revoked: list[set[int]] = field(default_factory=list)

    async def on_revoked(self, partitions: set[int]) -> None:
        self.revoked.append(partitions)


def reader_with(raw_max: int = 4000) -> tuple[LaneReader, Dispatcher, Writer, list]:
    reader = LaneReader(first=frozenset({TX, RETRY}), campaign=frozenset({BULK}), yield_every_s=0.001,
                        raw_max=raw_max)
    d, w, calls = Dispatcher(Intake()), Writer(), []
    reader.runtime = Runtime(SERDE, w, d)  # type: ignore[assignment]
    reader.pause = lambda tps, why: calls.append(("pause", sorted(tps), why))
    reader.resume = lambda tps, why: calls.append(("resume", sorted(tps), why))
    reader.assigned([(t, p) for t in (TX, BULK, RETRY) for p in range(2)])
    return reader, d, w, calls


async def drained(reader: LaneReader) -> None:
    task = asyncio.ensure_future(reader.run())
    for _ in range(200):
        await asyncio.sleep(0.001)
        if reader.held() == 0:
            break
    task.cancel()


def test_transactional_and_retries_go_before_campaign_records_in_order():
    async def go():
        reader, d, _w, _c = reader_with()
        reader.on_records([good(BULK, 0, i) for i in range(5)] + [good(TX, 1, 7), good(RETRY, 0, 3), good(TX, 1, 8)])
        await drained(reader)
        return d.intake.seen

    seen = asyncio.run(go())
    assert seen[:3] == [f"{TX}/1/7", f"{RETRY}/0/3", f"{TX}/1/8"]
    assert seen[3:] == [f"{BULK}/0/{i}" for i in range(5)]


def test_a_campaign_read_ahead_pauses_its_topics_and_resumes_at_half():
    async def go():
        reader, _d, _w, calls = reader_with(raw_max=10)
        reader.on_records([good(BULK, p, i) for i in range(8) for p in range(2)])  # 16 > 10
        paused = list(calls)
        await drained(reader)
        return paused, calls

    paused, calls = asyncio.run(go())
    campaign = [(BULK, 0), (BULK, 1)]
    assert paused == [("pause", campaign, BACKLOG)]  # only the campaign topic, every partition
    assert calls == [("pause", campaign, BACKLOG), ("resume", campaign, BACKLOG)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["good", "garbage", "none", "bug"]), min_size=1, max_size=25),
       st.data())
def test_poison_records_become_dead_letters_and_the_offset_moves_only_over_done_work(kinds, data):
    """Every record is either submitted or dead-lettered (never lost, never stops the lane); the
    committable offset is the end of the run of records whose work is done."""

    async def go():
        reader, d, w, _c = reader_with()
        msgs = []
        for o, kind in enumerate(kinds):
            m = good(BULK, 0, o)
            if kind == "garbage":
                m.v = b"\x00not avro at all"
            elif kind == "none":
                m.v = None
            elif kind == "bug":
                d.intake.raise_on.add(f"{BULK}/0/{o}")
            msgs.append(m)
        reader.on_records(msgs)
        await drained(reader)
        submitted = [int(c.rsplit("/", 1)[1]) for c in d.intake.seen]
        letters = sorted(x.letter.source.offset for x in w.letters)
        assert sorted(submitted + letters) == list(range(len(kinds)))
        assert all(kinds[o] != "good" for o in letters) and all(kinds[o] == "good" for o in submitted)
        # finish a random subset of the submitted ones
        finished = data.draw(st.sets(st.sampled_from(submitted))) if submitted else set()
        for o in finished:
            await d.intake.acks[f"{BULK}/0/{o}"]()
        done = set(letters) | finished
        run = 0
        while run in done:
            run += 1
        got = reader.offsets.take().get((BULK, 0))
        assert got == (run if run else None)

    asyncio.run(go())


def test_a_revocation_drops_what_was_not_read_and_commits_only_what_was_done():
    """Also when the partition comes straight back (eager range rebalances do that): the records
    taken before are not read again beside the ones fetched anew, so no offset passes open work."""
    async def go():
        reader, d, _w, _c = reader_with()
        reader.on_records([good(BULK, 0, 0), good(BULK, 0, 1), good(BULK, 1, 0)])
        await drained(reader)
        await d.intake.acks[f"{BULK}/0/0"]()  # 0/1 still under way; 1/0 still under way
        reader.on_records([good(BULK, 0, 2), good(BULK, 0, 3), good(TX, 0, 5)])  # taken, not read yet
        offsets = await reader.revoked([(BULK, 0), (TX, 0)], d.on_revoked)
        seen_before = list(d.intake.seen)
        reader.assigned([(BULK, 0), (TX, 0)])  # back again: read from the committed offset (1)
        reader.on_records([good(BULK, 0, o) for o in (1, 2, 3)])
        await drained(reader)
        for o in (2, 3):  # the re-fetched 2 and 3 are done, 1 (read again) is not
            await d.intake.acks[f"{BULK}/0/{o}"]()
        return offsets, d, seen_before, reader.offsets.committable([(BULK, 0)])

    offsets, d, seen_before, after = asyncio.run(go())
    assert offsets == {(BULK, 0): 1}  # the next owner starts at the first record not done
    assert d.revoked == [{0}]
    assert f"{BULK}/0/2" not in seen_before and f"{TX}/0/5" not in seen_before  # dropped, not read
    assert d.intake.seen[len(seen_before):] == [f"{BULK}/0/{o}" for o in (1, 2, 3)]  # once each, in order
    assert after == {}  # nothing passes the open record 1


def test_a_revocation_waits_for_the_record_being_read():
    """A command whose intake is under way when its partition is revoked is queued (or not) before
    the dispatcher lets the partition go: queued after, it would be sent here and by the next owner."""
    order: list[str] = []

    async def go():
        reader, d, _w, _c = reader_with()
        release = asyncio.Event()
        submit = d.intake.submit

        async def slow_submit(cmd, **kw):
            order.append("submit started")
            await release.wait()  # e.g. the ledger partition loading
            await submit(cmd, **kw)
            order.append("submit done")

        d.intake.submit = slow_submit  # type: ignore[method-assign]

        async def on_partitions(parts):
            order.append("dispatcher revoked")

        reader.on_records([good(BULK, 0, 0)])
        task = asyncio.ensure_future(reader.run())
        while not order:
            await asyncio.sleep(0.001)
        revoking = asyncio.ensure_future(reader.revoked([(BULK, 0)], on_partitions))
        await asyncio.sleep(0.05)
        release.set()
        await revoking
        task.cancel()

    asyncio.run(go())
    assert order == ["submit started", "submit done", "dispatcher revoked"]


def test_a_burst_of_first_topic_records_pauses_them_too():
    async def go():
        reader, _d, _w, calls = reader_with(raw_max=10)
        reader.on_records([good(TX, p, i) for i in range(8) for p in range(2)])
        paused = list(calls)
        await drained(reader)
        return paused, calls

    paused, calls = asyncio.run(go())
    assert paused == [("pause", [(TX, 0), (TX, 1), (RETRY, 0), (RETRY, 1)], BACKLOG)]
    assert calls[-1] == ("resume", [(TX, 0), (TX, 1), (RETRY, 0), (RETRY, 1)], BACKLOG)
