"""confluent-kafka client configs in one place: the delivery guarantees are set here."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from wapipe.config import Settings
from wapipe.kafka_edge import Endpoint, NoKafka, confluent_conf

__all__ = ["JAVA_PARTITIONER", "NoKafka", "consumer", "producer"]


# Kafka's Java client partitioner (murmur2), the one Faust's producer (aiokafka) uses: a keyed record
# lands on the same partition whichever of our writers produced it. librdkafka's default (CRC32)
# would not: a SendResult keyed by tenant must land on its request's partition, where the dedup
# table holds the key. Every librdkafka writer of keyed records that Faust reads sets it.
JAVA_PARTITIONER = "murmur2_random"


def partition_for(key: str, partitions: int) -> int:
    """The partition ``JAVA_PARTITIONER`` (Kafka's Java murmur2, Faust's and the SDK's) puts ``key`` on."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def producer(bootstrap: Endpoint, **overrides: Any) -> Producer:
    """Idempotent, acks=all: a write acknowledged is on every in-sync replica, once."""
    conf = {
        **confluent_conf(bootstrap),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 30000,
    }
    conf.update(overrides)
    return Producer(conf)


def consumer(bootstrap: Endpoint, group_id: str, **overrides: Any) -> Consumer:
    """Manual commits only: offsets move after the work is done, never before."""
    conf = {
        **confluent_conf(bootstrap),
        "group.id": group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    conf.update(overrides)
    return Consumer(conf)
