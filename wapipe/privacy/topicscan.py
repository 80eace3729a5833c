"""Reading a whole topic, or its oldest records, to verify what the broker still holds."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition

from wapipe.edge.endpoint import confluent_conf

ROLL_KEY = b"__roll__"  # a tombstone of a key nobody uses: rolls a compacted topic's active segment


def _consumer(bootstrap: str) -> Consumer:
    # An offset that retention deleted while we read (out of range) resumes at the oldest record
    # still held: the default ("latest") jumped to the end, so a scan skipped records still on the
    # topic and oldest_timestamps answered "nothing held" for a partition that held some.
    return Consumer({**confluent_conf(bootstrap), "group.id": f"wapipe-scan-{uuid.uuid4().hex}",
                     "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest"})


def scan(bootstrap: str, topic: str, *, timeout: float = 30.0) -> Iterator[Message]:
    """Every record of every partition, from the beginning up to the end as of the call."""
    c = _consumer(bootstrap)
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for p in md.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high > low:
                ends[p] = high
        if not ends:
            return
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to the end within {timeout}s")
            for m in c.consume(1000, timeout=0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and m.offset() >= ends.get(m.partition(), 0):
                        done.add(m.partition())
                    continue
                if m.offset() < ends[m.partition()]:
                    yield m
                if m.offset() >= ends[m.partition()] - 1:
                    done.add(m.partition())
    finally:
        c.close()


def oldest_timestamps(bootstrap: str, topic: str, *, timeout: float = 15.0) -> dict[int, int | None]:
    """Partition -> timestamp (ms) of its oldest record still held (None: nothing held).

    "Nothing held" only when the broker says so (empty, or the end reached before any record:
    retention emptied it while we read); a partition not answered in time raises TimeoutError,
    never reads as empty (erasure decides on this)."""
    c = _consumer(bootstrap)
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        out: dict[int, int | None] = {}
        want = []
        for p in md.partitions:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
            if high <= low:
                out[p] = None
            else:
                want.append(TopicPartition(topic, p, low))
        if want:
            c.assign(want)
            deadline = time.monotonic() + timeout
            while len(out) < len(md.partitions):
                if time.monotonic() > deadline:
                    missing = sorted(set(md.partitions) - set(out))
                    raise TimeoutError(f"{topic}: oldest record of partitions {missing} not read within {timeout}s")
                for m in c.consume(100, timeout=0.5):
                    if m.partition() in out:
                        continue
                    err = m.error()
                    if err is None:
                        out[m.partition()] = m.timestamp()[1]
                    elif err.code() == KafkaError._PARTITION_EOF:
                        out[m.partition()] = None  # retention deleted all it held while we read
                    else:
                        continue
                    c.pause([TopicPartition(topic, m.partition())])
        return out
    finally:
        c.close()


def roll_segments(producer: Producer, bootstrap: str, topic: str) -> int:
    """Write a no-op tombstone to every partition: a segment older than segment.ms rolls, so the
    cleaner may compact what the previous active segment held."""
    c = _consumer(bootstrap)
    try:
        parts = list(c.list_topics(topic, timeout=10).topics[topic].partitions)
    finally:
        c.close()
    for p in parts:
        producer.produce(topic, key=ROLL_KEY, value=None, partition=p)
    producer.flush(30)
    return len(parts)
