"""Small helpers for tests that read topics back from the real broker."""

from __future__ import annotations

from confluent_kafka import TopicPartition

from wapipe.edge.scan import scan


def read_all(bootstrap: str, topic: str, *, timeout: float = 20.0, expect: int | None = None) -> list:
    """Every record of every partition from the beginning up to the current end (the privacy scan:
    a partition is done at its end, also when retention emptied it; TimeoutError rather than a
    partial list)."""
    out = list(scan(bootstrap, topic, timeout=timeout))
    if expect is not None:
        assert len(out) == expect, f"{topic}: expected {expect} records, read {len(out)}"
    return out


def delete_all_records(bootstrap: str, topic: str) -> None:
    """Delete every record of every partition of ``topic`` (what retention does to old ones)."""
    from wapipe.edge.clients import admin_client

    admin = admin_client(bootstrap)
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    assert md is not None and md.partitions, f"no topic {topic}"
    for fut in admin.delete_records([TopicPartition(topic, p, -1) for p in md.partitions]).values():
        fut.result()


def produce_one_by_one(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]],
                       partition: int | None = None, **conf) -> None:
    """Write ``(key, value)`` records in order, each acknowledged before the next: a record near
    Kafka's size limit never shares a request (and its fate) with the records around it. Records
    up to 2,000,000 bytes leave the producer (the broker takes up to 1,048,588)."""
    from confluent_kafka import KafkaError

    from wapipe.edge.clients import JAVA_PARTITIONER, producer

    p = producer(bootstrap, partitioner=JAVA_PARTITIONER, **{"message.max.bytes": 2_000_000, **conf})
    where = {} if partition is None else {"partition": partition}
    for key, value in items:
        errors: list[KafkaError] = []
        p.produce(topic, key=key, value=value, on_delivery=lambda err, _m: err and errors.append(err), **where)
        assert p.flush(30) == 0 and not errors, f"{topic}: {errors}"
