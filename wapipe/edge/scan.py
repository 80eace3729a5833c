"""Reading a whole topic, or its oldest records, once: to verify what the broker still holds
(erasure, retention, exports, the audit trail) or to count what is on it (campaign progress).

A scan never answers "nothing there" for what it could not read: a topic the brokers do not know
raises ``ScanError`` (unless the caller says an absent topic holds nothing: ``missing_ok``), so do
metadata the brokers do not give, and a topic not read to its end in time raises ``TimeoutError``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.endpoint import Endpoint

ROLL_KEY = b"__roll__"  # a tombstone of a key nobody uses: rolls a compacted topic's active segment


class ScanError(RuntimeError):
    """A topic that could not be read: the brokers do not know it, or did not answer its metadata."""


def _consumer(bootstrap: Endpoint) -> Consumer:
    # An offset that retention deleted while we read (out of range) resumes at the oldest record
    # still held: the default ("latest") jumped to the end, so a scan skipped records still on the
    # topic and oldest_timestamps answered "nothing held" for a partition that held some.
    return make_consumer(bootstrap, f"wapipe-scan-{uuid.uuid4().hex}",  # never committed
                         **{"enable.partition.eof": True, "auto.offset.reset": "earliest"})


def _partitions(c: Consumer, topic: str, missing_ok: bool) -> list[int]:
    """The topic's partition ids; [] for an absent topic when ``missing_ok``, else ``ScanError``."""
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
    except KafkaException as exc:
        raise ScanError(f"{topic}: no metadata from the brokers ({exc})") from exc
    if md is not None and md.partitions:
        return sorted(md.partitions)
    if missing_ok and (md is None or md.error is None or md.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
        return []
    why = md.error.str() if md is not None and md.error is not None else "no such topic"
    raise ScanError(f"{topic}: {why} (run `wapipe topics apply`)")


# A partition whose leadership is moving (a topic just created, a broker restarting) answers so
# for a moment: asked again, it answers. Seen failing `campaign progress` right after topic creation.
_LEADER_MOVING = frozenset({KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE})


def _watermarks(c: Consumer, topic: str, partition: int, wait_s: float = 10.0) -> tuple[int, int]:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10, cached=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            if err is None or err.code() not in _LEADER_MOVING or time.monotonic() > deadline:
                raise ScanError(f"{topic}[{partition}]: no end offset from the brokers: {exc}") from exc
            time.sleep(0.2)


def scan(bootstrap: Endpoint, topic: str, *, timeout: float = 30.0, missing_ok: bool = False) -> Iterator[Message]:
    """Every record of every partition, from the beginning up to the end as of the call.
    ``TimeoutError`` when not read to that end within ``timeout``; ``ScanError`` when the topic
    is not there (with ``missing_ok``: no records) or its metadata does not come."""
    c = _consumer(bootstrap)
    try:
        ends = {}
        for p in _partitions(c, topic, missing_ok):
            low, high = _watermarks(c, topic, p)
            if high > low:
                ends[p] = high
        if not ends:
            return
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        done: set[int] = set()
        deadline = time.monotonic() + timeout
        while len(done) < len(ends):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to the end within {timeout:g}s "
                                   f"(partitions {sorted(set(ends) - done)} short of it)")
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


def end_offsets(bootstrap: Endpoint, topic: str, *, missing_ok: bool = False) -> dict[int, int]:
    """Partition -> the offset the next record written to it will get (its end now). An absent
    topic: ``ScanError``, or {} with ``missing_ok``."""
    c = _consumer(bootstrap)
    try:
        return {p: _watermarks(c, topic, p)[1] for p in _partitions(c, topic, missing_ok)}
    finally:
        c.close()


def oldest_timestamps(bootstrap: Endpoint, topic: str, *, timeout: float = 15.0,
                      missing_ok: bool = False) -> dict[int, int | None]:
    """Partition -> timestamp (ms) of its oldest record still held (None: nothing held).

    "Nothing held" only when the broker says so (empty, or the end reached before any record:
    retention emptied it while we read); a partition not answered in time raises TimeoutError,
    never reads as empty (erasure decides on this). An absent topic: ``ScanError``, or {} with
    ``missing_ok``."""
    c = _consumer(bootstrap)
    try:
        partitions = _partitions(c, topic, missing_ok)
        out: dict[int, int | None] = {}
        want = []
        for p in partitions:
            low, high = _watermarks(c, topic, p)
            if high <= low:
                out[p] = None
            else:
                want.append(TopicPartition(topic, p, low))
        if want:
            c.assign(want)
            deadline = time.monotonic() + timeout
            while len(out) < len(partitions):
                if time.monotonic() > deadline:
                    missing = sorted(set(partitions) - set(out))
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


def roll_segments(producer: Producer, bootstrap: Endpoint, topic: str) -> int:
    """Write a no-op tombstone to every partition: a segment older than segment.ms rolls, so the
    cleaner may compact what the previous active segment held. An absent topic has none to roll (0)."""
    c = _consumer(bootstrap)
    try:
        parts = _partitions(c, topic, missing_ok=True)
    finally:
        c.close()
    for p in parts:
        producer.produce(topic, key=ROLL_KEY, value=None, partition=p)
    producer.flush(30)
    return len(parts)
