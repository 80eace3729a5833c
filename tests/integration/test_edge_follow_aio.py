"""The edge's asyncio follower (wapipe/edge/follow_aio.py, the send worker's views and status
events) against the real broker: every decodable record of every partition in offset order,
poison records (undecodable, or refused by the view) passed without losing the next one,
tombstones passed, ``ready`` once the start's ends are read, ``since_ms`` starting at that time,
and a topic that is not there."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from tests.integration.test_edge_follow import make_topic, write
from wapipe.avro import AvroSerde
from wapipe.edge.follow_aio import AsyncTopicFollower

pytestmark = pytest.mark.integration

SERDE = AvroSerde()


def control(i: int, state: str = "RUNNING") -> bytes:
    return SERDE.encode("CampaignControl", {"campaign_id": f"c{i}", "tenant_id": "t", "state": state,
                                            "actor": "test", "at": 1_700_000_000_000})


class View:
    """Keeps the campaign ids it is handed; a record in state STOPPED is refused (ValueError)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def apply(self, rec: dict) -> None:
        if rec["state"] == "STOPPED":
            raise ValueError("refused by the view")
        self.seen.append(rec["campaign_id"])


async def follow(bootstrap: str, topic: str, view: View, **kw) -> AsyncTopicFollower:
    f = AsyncTopicFollower(bootstrap, topic, "CampaignControl", SERDE, view.apply, **kw)
    f.start()
    try:
        await asyncio.wait_for(f.ready.wait(), 30)
    except BaseException:
        await f.stop()
        raise
    return f


RECORD = st.one_of(
    st.integers(0, 999).map(lambda i: ("good", i)),
    st.integers(0, 999).map(lambda i: ("refused", i)),  # decodes; the view raises on it
    st.binary(max_size=30).map(lambda b: ("undecodable", b"\xff" + b)),
    st.just(("tombstone", None)),
)


@hsettings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(RECORD, min_size=1, max_size=25))
def test_poison_records_are_passed_and_the_next_one_is_not_lost(kafka, records):
    topic = make_topic(kafka, f"follow-aio-{uuid.uuid4().hex[:10]}", partitions=1)
    values = [control(x) if kind == "good" else control(x, "STOPPED") if kind == "refused" else x
              for kind, x in records]
    write(kafka, topic, [(b"k", v) for v in values], partition=0)
    view = View()

    async def run() -> int:
        f = await follow(kafka, topic, view)
        await f.stop()
        return f.unreadable

    unreadable = asyncio.run(run())
    assert view.seen == [f"c{x}" for kind, x in records if kind == "good"]  # in offset order, none lost
    assert unreadable == sum(1 for kind, _ in records if kind in ("refused", "undecodable"))


def test_every_partition_is_read_and_records_written_later_arrive(kafka, unique):
    topic = make_topic(kafka, f"follow-aio-{unique}", partitions=3)
    write(kafka, topic, [(f"k{i}".encode(), control(i)) for i in range(30)])
    view = View()

    async def run() -> None:
        f = await follow(kafka, topic, view)
        try:
            assert sorted(view.seen) == sorted(f"c{i}" for i in range(30))  # ready: the start's ends read
            write(kafka, topic, [(b"late", control(30))])
            deadline = time.monotonic() + 20
            while "c30" not in view.seen:
                assert time.monotonic() < deadline, "a record written after ready never arrived"
                await asyncio.sleep(0.05)
        finally:
            await f.stop()

    asyncio.run(run())


def test_since_ms_starts_at_that_time(kafka, unique):
    from wapipe.edge.clients import producer

    topic = make_topic(kafka, f"follow-aio-since-{unique}", partitions=2)
    now = int(time.time() * 1000)
    p = producer(kafka)
    for i in range(10):  # c0..c4 an hour old, c5..c9 a minute old
        p.produce(topic, key=f"k{i}".encode(), value=control(i), partition=i % 2,
                  timestamp=now - (3_600_000 if i < 5 else 60_000))
    assert p.flush(10) == 0
    view = View()

    async def run() -> None:
        f = await follow(kafka, topic, view, since_ms=lambda: now - 600_000)  # ten minutes back
        await f.stop()

    asyncio.run(run())
    assert sorted(view.seen) == [f"c{i}" for i in range(5, 10)]


def test_a_topic_that_is_not_there_is_ready_with_nothing(kafka, unique):
    view = View()

    async def run() -> None:
        f = await follow(kafka, f"no-such-{unique}", view)
        await f.stop()

    asyncio.run(run())
    assert view.seen == []
