"""A compacted topic really forgets a key once its tombstone has been cleaned."""

import time

import pytest

from tests.integration.kafka_helpers import read_all
from tests.integration.test_kafka_avro import make_topic
from wapipe.edge.clients import producer

pytestmark = [pytest.mark.integration]


def test_tombstone_removes_key_after_cleaner_runs(kafka, unique):
    topic = make_topic(kafka, f"test.compact.{unique}", partitions=1, config={
        "cleanup.policy": "compact", "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
        "delete.retention.ms": "100", "max.compaction.lag.ms": "1000", "segment.bytes": str(1024 * 1024),
    })
    p = producer(kafka)
    for i in range(5):
        p.produce(topic, key=b"erase-me", value=f"secret-{i}".encode())
        p.produce(topic, key=b"keep-me", value=f"v-{i}".encode())
    p.flush(10)
    p.produce(topic, key=b"erase-me", value=None)  # tombstone
    p.flush(10)
    assert any(m.key() == b"erase-me" and m.value() for m in read_all(kafka, topic))

    deadline = time.monotonic() + 60
    while True:
        time.sleep(0.5)
        # Roll the active segment (it is never cleaned) with a record of an unrelated key.
        p.produce(topic, key=b"roll", value=b"r")
        p.flush(10)
        keys = [m.key() for m in read_all(kafka, topic)]
        if b"erase-me" not in keys:
            break
        assert time.monotonic() < deadline, f"tombstoned key still readable after 60 s: {keys.count(b'erase-me')} records"
    values = [m.value() for m in read_all(kafka, topic) if m.key() == b"keep-me"]
    assert values == [b"v-4"], "compaction keeps the latest value of a live key"
