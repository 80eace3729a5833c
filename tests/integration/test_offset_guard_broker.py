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
