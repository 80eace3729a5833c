"""Small helpers for tests that read topics back from the real broker."""

from __future__ import annotations

import time

from confluent_kafka import Consumer, TopicPartition


def read_all(bootstrap: str, topic: str, *, timeout: float = 20.0, expect: int | None = None) -> list:
    """Every record of every partition from the beginning up to the current end."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        parts = [TopicPartition(topic, p, 0) for p in md.partitions]
        ends = {p.partition: c.get_watermark_offsets(p, timeout=10)[1] for p in parts}
        c.assign([TopicPartition(topic, p.partition, -2) for p in parts])  # OFFSET_BEGINNING
        out, done = [], {p for p, end in ends.items() if end == 0}
        deadline = time.monotonic() + timeout
        while len(done) < len(parts) and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.5):
                if m.error():
                    continue
                out.append(m)
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
        if expect is not None:
            assert len(out) == expect, f"{topic}: expected {expect} records, read {len(out)}"
        return out
    finally:
        c.close()


def delete_all_records(bootstrap: str, topic: str) -> None:
    """Delete every record of every partition of ``topic`` (what retention does to old ones)."""
    from wapipe.topics import admin_client

    admin = admin_client(bootstrap)
    md = admin.list_topics(topic, timeout=10).topics.get(topic)
    assert md is not None and md.partitions, f"no topic {topic}"
    for fut in admin.delete_records([TopicPartition(topic, p, -1) for p in md.partitions]).values():
        fut.result()
