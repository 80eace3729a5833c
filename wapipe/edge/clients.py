"""confluent-kafka producers and consumers of the edge: the delivery guarantees are set here."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from wapipe.config import Settings
from wapipe.edge.endpoint import Endpoint, KafkaEndpoint, NoKafka, aiokafka_kwargs, check_access, confluent_conf

__all__ = ["JAVA_PARTITIONER", "NoKafka", "admin_client", "aiokafka_reader", "consumer", "producer", "settings_endpoint",
           "topic_partitions"]


# Kafka's Java client partitioner (murmur2), the one Faust's producer (aiokafka) uses: a keyed record
# lands on the same partition whichever of our writers produced it. librdkafka's default (CRC32)
# would not: a SendResult keyed by tenant must land on its request's partition, where the dedup
# table holds the key. Every librdkafka writer of keyed records that Faust reads sets it.
JAVA_PARTITIONER = "murmur2_random"


def partition_for(key: str, partitions: int) -> int:
    """The partition ``JAVA_PARTITIONER`` (Kafka's Java murmur2, Faust's and the SDK's) puts ``key`` on."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def settings_endpoint(settings: Settings, *, check: bool = True) -> KafkaEndpoint:
    """KAFKA_BOOTSTRAP_SERVERS with the security of ``settings`` (the app layer fills the bootstrap
    in from a local stack first: ``wapipe.app.bootstrap``). A secured endpoint is tried once
    (``check``): refused credentials raise ``KafkaAuthError`` (a ``NoKafka``) here, with the
    broker's reason, before any client retries."""
    if not settings.kafka_bootstrap_servers:
        raise NoKafka("no Kafka: set KAFKA_BOOTSTRAP_SERVERS")
    ep = KafkaEndpoint.from_settings(settings, settings.kafka_bootstrap_servers)
    if check and ep.security.protocol != "PLAINTEXT":
        check_access(ep)
    return ep


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


def patient_producer(bootstrap: Endpoint, **overrides: Any) -> Producer:
    """``producer`` whose records wait for the broker however long it is away (no local timeout):
    for a processor that commits its input only after its output is acknowledged
    (``batches.flush_acked``), so a broker restart delays it instead of failing it."""
    return producer(bootstrap, **{"message.timeout.ms": 0, **overrides})


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


def admin_client(bootstrap: Endpoint, **overrides: Any) -> AdminClient:
    """A confluent-kafka admin client (topics, offsets, groups) with the endpoint's security."""
    return AdminClient({**confluent_conf(bootstrap), **overrides})


def aiokafka_reader(bootstrap: Endpoint, **overrides: Any) -> Any:
    """An aiokafka consumer outside any group (assign, never commit), from the beginning, committed
    records only: the send worker's views and its ledger. Started by the caller."""
    from aiokafka import AIOKafkaConsumer

    kw: dict[str, Any] = {**aiokafka_kwargs(bootstrap), "enable_auto_commit": False, "group_id": None,
                          "isolation_level": "read_committed", "auto_offset_reset": "earliest"}
    kw.update(overrides)
    return AIOKafkaConsumer(**kw)


def topic_partitions(bootstrap: Endpoint, topic: str, timeout: float = 5.0) -> list[int]:
    """The partition ids of ``topic`` on the brokers ([]: no such topic yet), from the cluster's
    metadata (all topics are asked for: naming one could create it on a broker that auto-creates)."""
    metadata = admin_client(bootstrap).list_topics(timeout=timeout)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        return []
    return sorted(found.partitions)
