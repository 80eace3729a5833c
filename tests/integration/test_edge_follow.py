"""The edge's topic follower (wapipe/edge/follow.py) against the real broker: every record of every
partition in offset order, read-your-writes readiness, poison records passed without losing the
next one, several topics, a topic that appears later, and a missing topic named."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka.admin import NewTopic
from hypothesis import HealthCheck, given, settings as hsettings
from hypothesis import strategies as st

from wapipe.edge.clients import producer
from wapipe.edge.follow import FollowError, TopicFollower
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration


def make_topic(bootstrap: str, name: str, partitions: int = 3) -> str:
    admin = admin_client(bootstrap)  # kept until the topic exists: a client destroyed first fails the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(15)
    return name


def write(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None]],
          partition: int | None = None) -> list[tuple[int, int]]:
    """Write and wait for the acks; the (partition, offset) of each record, in order."""
    p = producer(bootstrap)
    placed: list[tuple[int, int] | None] = [None] * len(records)
    where = {} if partition is None else {"partition": partition}
    for i, (k, v) in enumerate(records):
        def done(err, msg, i=i):
            assert err is None, err
            placed[i] = (msg.partition(), msg.offset())
        p.produce(topic, key=k, value=v, on_delivery=done, **where)
    assert p.flush(30) == 0
    return placed  # type: ignore[return-value]


class View:
    """A view that keeps what it was handed; a value starting with b"poison" raises."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, int, int, bytes | None]] = []

    def handle(self, m) -> None:
        if m.value() is not None and m.value().startswith(b"poison"):
            raise ValueError("a poison record")
        with self.lock:
            self.seen.append((m.topic(), m.partition(), m.offset(), m.value()))


def test_every_record_in_order_and_read_your_writes(kafka, unique):
    topic = make_topic(kafka, f"follow-{unique}")
    before = write(kafka, topic, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(30)])
    view = View()
    with TopicFollower(kafka, topic, view.handle, name=f"t-{unique}") as f:
        f.wait_ready(20)
        assert len(view.seen) == 30  # all of it, before wait_ready returned
        for i in range(30, 60):  # each write is visible once wait_ready returns, not "eventually"
            (place,) = write(kafka, topic, [(f"k{i}".encode(), f"v{i}".encode())])
            f.wait_ready(20)
            assert f.has_read(topic, *place)
            assert not f.has_read(topic, place[0], place[1] + 1)
            assert (topic, *place, f"v{i}".encode()) in view.seen
        assert f.ready and f.unreadable == 0
    by_partition: dict[int, list[int]] = {}
    for _, p, off, _ in view.seen:
        by_partition.setdefault(p, []).append(off)
    assert all(offs == sorted(offs) == list(range(len(offs))) for offs in by_partition.values())
    assert sum(map(len, by_partition.values())) == 60 and before


@hsettings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=40).filter(lambda b: not b.startswith(b"poison")),
                          st.just(b"poison"), st.builds(lambda b: b"poison" + b, st.binary(max_size=8)),
                          st.none()),
                min_size=1, max_size=30))
def test_poison_records_are_passed_and_the_next_one_is_not_lost(kafka, values):
    import uuid

    topic = make_topic(kafka, f"follow-poison-{uuid.uuid4().hex[:10]}", partitions=1)
    write(kafka, topic, [(b"k", v) for v in values], partition=0)
    view = View()
    with TopicFollower(kafka, topic, view.handle, name="poison") as f:
        f.wait_ready(20)
        poison = [i for i, v in enumerate(values) if v is not None and v.startswith(b"poison")]
        assert f.unreadable == len(poison)
        assert [off for _, _, off, _ in view.seen] == [i for i in range(len(values)) if i not in poison]
        assert [v for *_, v in view.seen] == [v for i, v in enumerate(values) if i not in poison]
        assert f.has_read(topic, 0, len(values) - 1)  # a poison record last is passed too


def test_several_topics_and_a_handler_failing_on_one_topic(kafka, unique):
    a, b = make_topic(kafka, f"follow-a-{unique}", 2), make_topic(kafka, f"follow-b-{unique}", 1)
    write(kafka, a, [(b"x", b"a1"), (b"y", b"poison!"), (b"z", b"a3")])
    write(kafka, b, [(b"x", b"b1"), (b"x", None)])
    view = View()
    with TopicFollower(kafka, (a, b), view.handle, name=f"ab-{unique}") as f:
        f.wait_ready(20)
        got = sorted(((t, v) for t, _, _, v in view.seen), key=repr)
        assert got == sorted([(a, b"a1"), (a, b"a3"), (b, b"b1"), (b, None)], key=repr)
        assert f.unreadable == 1


def test_a_missing_topic_is_named_with_the_callers_error(kafka, unique):
    class ViewError(Exception):
        pass

    f = TopicFollower(kafka, f"no-such-{unique}", lambda m: None, name="missing", error=ViewError)
    with pytest.raises(ViewError, match=f"no-such-{unique}.*wapipe topics apply"):
        f.start()
    f.close()
    with pytest.raises(ViewError, match="not started"):
        f.wait_ready(1)


def test_waiting_for_a_topic_that_appears_later(kafka, unique):
    topic = f"follow-late-{unique}"
    view = View()
    f = TopicFollower(kafka, topic, view.handle, name=f"late-{unique}").start(wait_for_topics=True)
    try:
        assert not f.ready
        with pytest.raises(FollowError, match="not found"):
            f.wait_ready(0.5)
        make_topic(kafka, topic, 2)
        write(kafka, topic, [(b"k", b"v")])
        deadline = time.monotonic() + 30
        while not f.caught_up(1) and time.monotonic() < deadline:
            pass
        assert [v for *_, v in view.seen] == [b"v"]
        assert f.ready
    finally:
        f.close()
