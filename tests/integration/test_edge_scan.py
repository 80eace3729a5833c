"""The topic scans that verify retention and erasure, against the real broker, when retention
deletes records under them: an offset that no longer exists resumes at the oldest record still
held (a scan that jumped to the end would miss records still on the topic); the oldest-record
check says "nothing held" only when the broker says so, and raises when it cannot tell."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from wapipe.edge.clients import producer
from wapipe.edge.scan import _consumer
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration


def test_a_deleted_offset_resumes_at_the_oldest_record_still_held(topics, unique):
    bootstrap, topic = topics, f"scan.{unique}"
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    p = producer(bootstrap)
    for i in range(10):
        p.produce(topic, key=b"k", value=b"%d" % i)
    assert p.flush(10) == 0
    # what retention does while a scan is under way: offsets 0..5 are gone
    admin.delete_records([TopicPartition(topic, 0, 6)])[TopicPartition(topic, 0, 6)].result()
    c = _consumer(bootstrap)
    try:
        c.assign([TopicPartition(topic, 0, 2)])  # an offset read before the deletion
        got = []
        for _ in range(40):
            got += [m.offset() for m in c.consume(100, timeout=0.5) if m.error() is None]
            if got:
                break
    finally:
        c.close()
    assert got and got[0] == 6


class _Delegating:
    """The real consumer, with one method replaced to force a race's order (the broker stays real)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_oldest_timestamps_says_nothing_held_only_when_the_broker_says_so(topics, unique, monkeypatch):
    from wapipe.edge import scan as edge_scan

    bootstrap, topic = topics, f"oldest.{unique}"
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, 3, 1)])[topic].result()
    p = producer(bootstrap)
    t0 = int(time.time() * 1000) - 60_000  # recent: the topic's own retention must not delete them
    for i in range(4):  # p0: records stamped t0..t0+3; p1: never written; p2: written, then all deleted
        p.produce(topic, value=b"%d" % i, partition=0, timestamp=t0 + i)
        p.produce(topic, value=b"%d" % i, partition=2, timestamp=t0 + 1000 + i)
    assert p.flush(10) == 0
    admin.delete_records([TopicPartition(topic, 0, 1)])[TopicPartition(topic, 0, 1)].result()
    assert edge_scan.oldest_timestamps(bootstrap, topic) == {0: t0 + 1, 1: None, 2: t0 + 1000}

    # retention empties p2 between the watermark request and the read: the read meets the end
    stale: dict[int, tuple[int, int]] = {}

    class StaleWatermarks(_Delegating):
        def get_watermark_offsets(self, tp, **kw):
            if tp.partition not in stale:
                stale[tp.partition] = self._real.get_watermark_offsets(tp, **kw)
                if tp.partition == 2:
                    admin.delete_records([TopicPartition(topic, 2, 4)])[TopicPartition(topic, 2, 4)].result()
            return stale[tp.partition]

    real_consumer = edge_scan._consumer
    monkeypatch.setattr(edge_scan, "_consumer", lambda b: StaleWatermarks(real_consumer(b)))
    assert edge_scan.oldest_timestamps(bootstrap, topic) == {0: t0 + 1, 1: None, 2: None}
    assert stale[2] == (0, 4)  # it did ask for offset 0 of p2, which no longer existed

    # a partition whose first record does not come in time is not "nothing held": it raises
    class Stuck(_Delegating):  # as a broker that never answers p0's fetch: the others are assigned only
        def assign(self, tps):
            self._real.assign([tp for tp in tps if tp.partition != 0])

    monkeypatch.setattr(edge_scan, "_consumer", lambda b: Stuck(real_consumer(b)))
    with pytest.raises(TimeoutError, match=r"partitions \[0\]"):
        edge_scan.oldest_timestamps(bootstrap, topic, timeout=2)


def test_a_missing_topic_is_an_error_unless_the_caller_says_it_holds_nothing(topics, unique):
    from wapipe.edge.scan import ScanError, oldest_timestamps, roll_segments, scan

    missing = f"no-such-{unique}"
    with pytest.raises(ScanError, match=missing):
        list(scan(topics, missing))
    with pytest.raises(ScanError, match=missing):
        oldest_timestamps(topics, missing)
    assert list(scan(topics, missing, missing_ok=True)) == []
    assert oldest_timestamps(topics, missing, missing_ok=True) == {}
    assert roll_segments(producer(topics), topics, missing) == 0  # nothing to roll
    assert missing not in admin_client(topics).list_topics(timeout=10).topics  # and nothing created


def test_a_scan_not_done_in_time_raises_instead_of_stopping_short(topics, unique, monkeypatch):
    from wapipe.edge import scan as edge_scan

    bootstrap, topic = topics, f"scan-short.{unique}"
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result()
    p = producer(bootstrap)
    for i in range(6):
        p.produce(topic, value=b"%d" % i, partition=i % 2)
    assert p.flush(10) == 0
    assert sorted(m.value() for m in edge_scan.scan(bootstrap, topic)) == [b"%d" % i for i in range(6)]

    class OnePartition(_Delegating):  # as a broker that never answers p1's fetch
        def assign(self, tps):
            self._real.assign([tp for tp in tps if tp.partition != 1])

    real_consumer = edge_scan._consumer
    monkeypatch.setattr(edge_scan, "_consumer", lambda b: OnePartition(real_consumer(b)))
    got = []
    with pytest.raises(TimeoutError, match=r"partitions \[1\] short of it"):
        for m in edge_scan.scan(bootstrap, topic, timeout=2):
            got.append(m.value())
    assert sorted(got) == [b"0", b"2", b"4"]  # what it read is handed on; the end is never claimed
