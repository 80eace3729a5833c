"""broker_committed: the offsets a consumer group committed, read from the real broker without
joining the group (what the offset guard checks a partition's first record against)."""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import NewTopic

from wapipe.offset_guard import broker_committed
from wapipe.topics import admin_client

pytestmark = pytest.mark.integration


class TP(NamedTuple):  # Faust's TP shape
    topic: str
    partition: int


def test_broker_committed_reads_the_groups_offsets_and_none_where_it_has_none(topics, unique):
    bootstrap, topic, group = topics, f"guard.{unique}", f"guard-{unique}"
    admin = admin_client(bootstrap)  # kept referenced until the futures resolve
    for f in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        f.result()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(topic, 0, 3900)], asynchronous=False)
    finally:
        c.close()
    got = asyncio.run(broker_committed(bootstrap, group, [TP(topic, 0), TP(topic, 1)]))
    assert got == {TP(topic, 0): 3900, TP(topic, 1): None}
    assert asyncio.run(broker_committed(bootstrap, group, [])) == {}


@pytest.mark.slow
def test_end_offsets_come_back_after_a_broker_restart(tmp_path, caplog):
    """An admin client that saw the broker restart can answer FENCED_LEADER_EPOCH for good; the
    stall watch's reader replaces its client after a failure, so the ends come back (and the
    failure is logged once, not every 5 s)."""
    import time

    from confluent_kafka import Producer
    from structlog.testing import capture_logs

    from wapipe.offset_guard import BrokerEnds
    from tests.harness import dedicated_broker
    from wapipe.topics import WEBHOOK_RAW

    parts = [(WEBHOOK_RAW, p) for p in range(4)]

    def until(reader, want, seconds=60.0):
        deadline = time.monotonic() + seconds
        got = None
        while time.monotonic() < deadline:
            got = reader.read(parts, 5)
            if got is not None and got[(WEBHOOK_RAW, 0)] == want:
                return got
            time.sleep(1.0)
        return got

    with dedicated_broker(tmp_path) as provider:
        fresh = BrokerEnds(provider.bootstrap)
        assert until(fresh, 0) is not None
        p = Producer({"bootstrap.servers": provider.bootstrap, "acks": "all"})
        p.produce(WEBHOOK_RAW, b"before", partition=0)
        assert p.flush(30) == 0
        provider._jvm.stop()
        provider._jvm.start()
        p.produce(WEBHOOK_RAW, b"after", partition=0)
        assert p.flush(60) == 0
        with capture_logs() as logs:
            assert until(fresh, 2, 30)[(WEBHOOK_RAW, 0)] == 2
        warnings = [e for e in logs if e["event"] == "offset_guard.ends_unavailable"]
        assert len(warnings) <= 1
        if warnings:
            assert any(e["event"] == "offset_guard.ends_available_again" for e in logs)
