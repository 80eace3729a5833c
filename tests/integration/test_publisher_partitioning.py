"""Our librdkafka writers put a keyed record on the partition Faust's own producer (aiokafka)
would: the send worker's results must land on their request's partition, where the dedup table
holds the key (a SendResult on another partition leaves the table at QUEUED for good)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from confluent_kafka.admin import NewTopic

from wapipe.edge.clients import JAVA_PARTITIONER
from wapipe.publisher import KafkaPublisher
from wapipe.edge.clients import admin_client

pytestmark = pytest.mark.integration
KEYS = [f"tenant-{i}".encode() for i in range(40)]


async def partitions(bootstrap: str, topic: str, **publisher_conf: object) -> tuple[list[int], list[int]]:
    """Each key's partition as written by wapipe.publisher and by aiokafka."""
    pub = KafkaPublisher(bootstrap, message_timeout_ms=10_000, deadline_ms=12_000, **publisher_conf)
    pub.start(asyncio.get_running_loop())
    aio = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await aio.start()
    try:
        ours = [(await pub.publish(topic, b"v", k)).partition for k in KEYS]
        faust = [(await (await aio.send(topic, b"v", key=k))).partition for k in KEYS]
    finally:
        await aio.stop()
        pub.close()
    return ours, faust


def test_the_publisher_partitions_keys_as_faust_does(topics, unique):
    bootstrap, topic = topics, f"partitioning.{unique}"
    admin = admin_client(bootstrap)
    admin.create_topics([NewTopic(topic, 8, 1)])[topic].result()
    ours, faust = asyncio.run(partitions(bootstrap, topic, partitioner=JAVA_PARTITIONER))
    assert ours == faust
    assert len(set(faust)) > 1  # the keys are spread, so the comparison means something
    # librdkafka's default partitioner (CRC32) does not agree: the setting is what makes it so.
    default, faust_again = asyncio.run(partitions(bootstrap, topic))
    assert faust_again == faust and default != faust
