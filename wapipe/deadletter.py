"""Dead letters: the one way every consumer sets a record aside, with why.

A consumer that cannot handle a record writes a ``DeadLetter`` (schemas/avro/DeadLetter.v1.avsc)
naming where the record came from (``source_topic``, ``partition``, ``offset``), why (``reason``,
``error_type``) and what it was (``key``, ``value``), **waits for the broker's ack**, and only
then lets the record's offset be committed. So a record is always either handled or
dead-lettered before anything past it is committed; a broker that does not answer holds the
consumer up (it retries), it never makes it skip.

Why the cutting: a record close to Kafka's message limit (1 MB by default) does not fit in a
dead letter that adds its own fields, and a dead letter the broker refuses would leave the
consumer the choice of stopping for ever or skipping the record silently. So a dead letter is
written whole when its encoding fits ``Settings.dead_letter_max_bytes``; otherwise it is cut down
(``key`` and ``value`` to their first ``DEFAULT_PREFIX`` bytes, ``reason`` to ``REASON_MAX``
characters, the original sizes in ``headers``: ``cut``, ``key_bytes``, ``value_bytes``); and if
the broker still refuses it as too large (a topic configured smaller), it is cut to the minimum
(``MIN_PREFIX`` bytes) and written again. Topic, partition, offset, reason and error type are
always kept.

* ``DeadLetters`` — async (Faust agents, over ``wapipe.publisher.KafkaPublisher.publish``).
* ``SyncDeadLetters`` — blocking (the confluent-kafka loops: sink, tenants follower, privacy).

Each written dead letter is counted in a ``DeadLetterTally`` by its reason (the ``error_type``,
a short class of failure; the free-text ``reason`` stays in the record). By default that is
``PROCESS_TALLY``, the process's own: one process runs one service, and its probe
(wapipe/probe.py) exports the tally as ``wapipe_dead_letters_total{service, reason}`` — the way
Prometheus clients keep a process registry. Tests give a writer a tally of their own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from wapipe.avro import AvroSerde
from wapipe.edge.batches import Stopped
from wapipe.log import get_logger
from wapipe.messages.deadletter import DeadLetterRecord

log = get_logger(__name__)

RECORD = "DeadLetter"
REASON_MAX = 2000
DEFAULT_PREFIX = 64 * 1024  # bytes of key and value kept by a cut-down dead letter
MIN_PREFIX = 1024  # ...and by the last resort, after the broker refused the cut-down one
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE})


def too_large(code: int | None) -> bool:
    """Whether a Kafka error code says the record is too large (retrying it as it is cannot help)."""
    return code in _TOO_LARGE


def refused_as_too_large(exc: BaseException) -> bool:
    """A failed write (``PublishFailed``, ``KafkaException``) whose record can never be stored as it is."""
    if getattr(exc, "too_large", False):
        return True
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and too_large(err.code())


class DeadLetterTally:
    """Dead letters written, by reason (``error_type``); safe to add from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, reason: str) -> None:
        with self._lock:
            self._counts[reason or "unknown"] += 1

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


PROCESS_TALLY = DeadLetterTally()


@dataclass(frozen=True)
class Source:
    """Where a bad record came from, and what it was."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None

    @classmethod
    def of_kafka(cls, m: Any) -> "Source":
        """A confluent-kafka ``Message``."""
        return cls(m.topic(), m.partition(), m.offset(), m.key(), m.value())

    @classmethod
    def of_faust(cls, event: Any) -> "Source":
        """A Faust ``Event`` (its ``message``)."""
        m = event.message
        return cls(m.topic, m.partition, m.offset, m.key, m.value)


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter before encoding. ``value`` defaults to the source record's bytes; a
    consumer that sets aside a part of a record (one item of a webhook) puts that part there."""

    source: Source
    reason: str
    error_type: str
    tenant_id: str | None = None
    subject_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes | None = None
    failed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))

    def record(self, prefix: int | None = None) -> DeadLetterRecord:
        """The record on the topic; ``prefix`` cuts key and value to that many bytes (``None``: whole)."""
        key = self.source.key
        value = self.value if self.value is not None else self.source.value
        headers = {str(k)[:200]: str(v)[:1000] for k, v in self.headers.items()}
        reason = self.reason if prefix is None else self.reason[:REASON_MAX]
        if prefix is not None:
            headers["cut"] = f"key and value cut to their first {prefix} bytes to fit the topic"
            headers["key_bytes"] = str(len(key or b""))
            headers["value_bytes"] = str(len(value or b""))
            key = None if key is None else bytes(key[:prefix])
            value = None if value is None else bytes(value[:prefix])
        return DeadLetterRecord(source_topic=self.source.topic, partition=self.source.partition,
                                offset=self.source.offset, key=key, value=value, reason=reason,
                                error_type=self.error_type[:200], tenant_id=self.tenant_id, subject_id=self.subject_id,
                                headers=headers, failed_at=self.failed_at)


def encode(serde: AvroSerde, letter: DeadLetter, topic: str, max_bytes: int) -> tuple[bytes, int | None]:
    """The dead letter's bytes, cut down when whole it would exceed ``max_bytes``; and the prefix
    it was cut to (``None``: whole)."""
    whole = serde.encode(RECORD, letter.record().to_avro(), topic=topic)
    if len(whole) <= max_bytes:
        return whole, None
    prefix = max(MIN_PREFIX, min(DEFAULT_PREFIX, max_bytes // 4))
    return serde.encode(RECORD, letter.record(prefix).to_avro(), topic=topic), prefix


def _key(letter: DeadLetter, key: bytes | None) -> bytes | None:
    k = letter.source.key if key is None else key
    return None if k is None else bytes(k[:MIN_PREFIX])


@dataclass
class DeadLetters:
    """Writes dead letters from a coroutine: ``await write(letter)`` returns once the broker acked
    it. ``publish(topic, value, key)`` is ``KafkaPublisher.publish`` (its ``PublishFailed`` says
    ``too_large``)."""

    serde: AvroSerde
    topic: str
    publish: Callable[[str, bytes, bytes | None], Awaitable[Any]]
    max_bytes: int
    retry_max_s: float = 10.0
    written: int = 0
    tally: DeadLetterTally = PROCESS_TALLY

    async def write(self, letter: DeadLetter, *, key: bytes | None = None) -> None:
        value, prefix = encode(self.serde, letter, self.topic, self.max_bytes)
        delay = 0.1
        while True:
            try:
                await self.publish(self.topic, value, _key(letter, key))
                break
            except Exception as exc:
                if refused_as_too_large(exc) and prefix != MIN_PREFIX:
                    prefix = MIN_PREFIX
                    value = self.serde.encode(RECORD, letter.record(prefix).to_avro(), topic=self.topic)
                    continue
                log.warning("dead_letter.write_failed", topic=self.topic, source=letter.source.topic,
                            offset=letter.source.offset, error=str(exc)[:300], retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max_s)
        self.written += 1
        self.tally.add(letter.error_type[:200])
        log.warning("dead_letter", topic=self.topic, source=letter.source.topic, partition=letter.source.partition,
                    offset=letter.source.offset, error_type=letter.error_type, reason=letter.reason[:300],
                    cut=prefix is not None)


class SyncDeadLetters:
    """Writes dead letters from a blocking loop, each acked before ``write`` returns. While the
    broker does not answer it retries up to ``timeout`` seconds, then raises ``KafkaException``
    (the caller then does not commit, and a restart meets the record again). With ``stop`` (for a
    producer without a local timeout, ``edge.clients.patient_producer``) it waits however long the
    broker is away, and raises ``edge.batches.Stopped`` once ``stop`` is set."""

    def __init__(self, serde: AvroSerde, topic: str, producer: Producer, max_bytes: int, *,
                 timeout: float = 60.0, tally: DeadLetterTally = PROCESS_TALLY,
                 stop: threading.Event | None = None) -> None:
        self.serde = serde
        self.topic = topic
        self.producer = producer
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.tally = tally
        self.stop = stop
        self.written = 0

    def write(self, letter: DeadLetter, *, key: bytes | None = None) -> None:
        value, prefix = encode(self.serde, letter, self.topic, self.max_bytes)
        deadline = None if self.stop is not None else time.monotonic() + self.timeout
        delay = 0.1
        while True:
            err = self._produce(value, _key(letter, key), deadline)
            if err is None:
                break
            if too_large(err.code()) and prefix != MIN_PREFIX:
                prefix = MIN_PREFIX
                value = self.serde.encode(RECORD, letter.record(prefix).to_avro(), topic=self.topic)
                continue
            if deadline is not None and time.monotonic() + delay > deadline:
                raise KafkaException(err)
            self._check_stop()
            log.warning("dead_letter.write_failed", topic=self.topic, source=letter.source.topic,
                        offset=letter.source.offset, error=err.str(), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.written += 1
        self.tally.add(letter.error_type[:200])
        log.warning("dead_letter", topic=self.topic, source=letter.source.topic, partition=letter.source.partition,
                    offset=letter.source.offset, error_type=letter.error_type, reason=letter.reason[:300],
                    cut=prefix is not None)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped(f"{self.topic}: dead letter not acknowledged at stop")

    def _produce(self, value: bytes, key: bytes | None, deadline: float | None) -> KafkaError | None:
        result: list[KafkaError | None] = []

        def done(err: KafkaError | None, _msg: Any) -> None:
            result.append(err)

        try:
            self.producer.produce(self.topic, value=value, key=key, on_delivery=done)
        except KafkaException as exc:
            return exc.args[0]
        except BufferError:
            self.producer.poll(0.5)
            return KafkaError(KafkaError._QUEUE_FULL, "producer queue full")
        while not result:
            self.producer.poll(0.05)
            if deadline is not None and time.monotonic() > deadline + 30:  # message.timeout.ms ends it before this
                return KafkaError(KafkaError._MSG_TIMED_OUT, "no acknowledgement")
            self._check_stop()
        return result[0]
