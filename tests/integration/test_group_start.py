"""``start_at_end`` against the real broker: a new group starts at the end of every partition at once,
a partition the group has committed is never moved, and a group with members is left alone."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from wapipe.edge import clients as K
from wapipe.edge.group_start import start_at_end
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(kafka, unique) -> str:
    """A topic of 3 partitions holding 5, 0 and 2 records."""
    name = f"group-start-{unique}"
    admin = admin_client(kafka)
    admin.create_topics([NewTopic(name, 3, 1)])[name].result(15)
    p = K.producer(kafka)
    for partition, n in ((0, 5), (2, 2)):
        for i in range(n):
            p.produce(name, value=b"x%d" % i, partition=partition)
    assert p.flush(15) == 0
    return name


def committed(kafka: str, group: str, topic: str) -> dict[int, int]:
    c = K.consumer(kafka, group)
    try:
        got = c.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in got}


def test_a_new_group_is_committed_at_the_end_of_every_partition(kafka, topic, unique):
    group = f"g-{unique}"
    done = start_at_end(admin_client(kafka), group, [topic])
    assert done.committed == {(topic, 0): 5, (topic, 1): 0, (topic, 2): 2}
    assert committed(kafka, group, topic) == {0: 5, 1: 0, 2: 2}

    # Records written later are read by whichever member is assigned the partition, with no
    # reset involved: the partition has a commit.
    p = K.producer(kafka)
    p.produce(topic, value=b"later", partition=1)
    assert p.flush(15) == 0
    c = K.consumer(kafka, group, **{"auto.offset.reset": "latest"})
    try:
        c.subscribe([topic])
        seen = []
        for _ in range(40):
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.append((m.partition(), m.value()))
            if seen:
                break
    finally:
        c.close()
    assert seen == [(1, b"later")]


def test_committed_partitions_are_never_moved_and_missing_ones_are_filled(kafka, topic, unique):
    group = f"g-{unique}"
    c = K.consumer(kafka, group)
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 1)], asynchronous=False)
    finally:
        c.close()

    done = start_at_end(admin_client(kafka), group, [topic])
    assert done.committed == {(topic, 1): 0, (topic, 2): 2}
    assert committed(kafka, group, topic) == {0: 1, 1: 0, 2: 2}

    again = start_at_end(admin_client(kafka), group, [topic])
    assert again.committed == {} and again.skipped == "every partition has a committed offset"


def test_a_group_with_members_is_left_alone(kafka, topic, unique):
    group = f"g-{unique}"
    member = K.consumer(kafka, group)
    try:
        member.subscribe([topic])
        for _ in range(40):  # until it has joined (an assignment)
            member.poll(0.25)
            if member.assignment():
                break
        assert member.assignment()
        done = start_at_end(admin_client(kafka), group, [topic])
        assert done.committed == {} and done.skipped == "the group has members"
    finally:
        member.close()
    assert committed(kafka, group, topic) == {0: -1001, 1: -1001, 2: -1001}


def test_an_unknown_topic_is_an_error(kafka, unique):
    with pytest.raises(Exception, match="not found"):
        start_at_end(admin_client(kafka), f"g-{unique}", [f"no-such-topic-{unique}"])


class LoadingCoordinator:
    """The real admin client, but the group coordinator answers its first ``busy`` offset fetches
    with COORDINATOR_LOAD_IN_PROGRESS, as a broker does while it loads its group state after a
    start (seen stopping a worker's start in a full suite)."""

    def __init__(self, admin, busy: int) -> None:
        self._admin = admin
        self.busy = busy

    def __getattr__(self, name):
        return getattr(self._admin, name)

    def list_consumer_group_offsets(self, requests, **kw):
        if self.busy > 0:
            self.busy -= 1
            from concurrent.futures import Future

            from confluent_kafka import KafkaError, KafkaException

            fut: Future = Future()
            fut.set_exception(KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS)))
            return {r.group_id: fut for r in requests}
        return self._admin.list_consumer_group_offsets(requests, **kw)


def test_a_loading_coordinator_is_asked_again_and_another_error_is_raised(kafka, topic, unique):
    admin = LoadingCoordinator(admin_client(kafka), busy=3)
    done = start_at_end(admin, f"g-{unique}", [topic])
    assert admin.busy == 0 and done.committed == {(topic, 0): 5, (topic, 1): 0, (topic, 2): 2}

    # still loading when the time is up: the worker must not start blind
    admin = LoadingCoordinator(admin_client(kafka), busy=10_000)
    with pytest.raises(Exception, match="COORDINATOR_LOAD_IN_PROGRESS"):
        start_at_end(admin, f"g2-{unique}", [topic], timeout=1.0)
    with pytest.raises(Exception, match="not found"):
        start_at_end(admin_client(kafka), f"g3-{unique}", [f"no-such-topic-{unique}"])
