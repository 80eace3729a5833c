"""The topic scans that verify retention and erasure, against the real broker, when retention
deletes records under them: an offset that no longer exists resumes at the oldest record still
held (a scan that jumped to the end would miss records still on the topic)."""

from __future__ import annotations

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from wapipe.kafka import producer
from wapipe.privacy.topicscan import _consumer
from wapipe.topics import admin_client

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
