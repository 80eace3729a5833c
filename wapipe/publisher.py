"""Kafka writes a coroutine can await: it resumes once the broker acknowledged (acks=all).

Used by the webhook ingress (the HTTP answer waits for the ack), the send worker (its ledger
entries, results, retries, intake writes) and the normaliser (its events). One idempotent acks=all
librdkafka producer per process, shared by every caller, so concurrent writes fill the same
batches (``linger.ms``). Delivery reports resolve the callers' futures; who polls the producer
for them is ``poll_mode``:

* ``"loop"`` (default): a task on the event loop calls the non-blocking ``poll(0)`` every
  millisecond while messages are in flight (and sleeps on an event when none are), so the
  callbacks run on the loop's own thread. Measured in bench/ingress.py on 2 cores this cost
  ~80 µs of CPU per webhook against ~100 µs with a thread: a poll thread takes the GIL once per
  delivery report, and those hand-offs with the busy loop thread are what it pays for.
* ``"thread"``: a background thread blocks in ``poll()``; the callbacks it runs are collected
  and handed to the loop in ONE ``call_soon_threadsafe`` per poll (not one wake-up per message).

Every wait is bounded twice: librdkafka fails a message after ``message.timeout.ms``, and
``publish`` gives up at an overall deadline above it. A request that did not get an ack is
answered 5xx, so Meta retries; it is never answered 200 — unless the write can never succeed:
a record over the producer's ``message.max.bytes`` or the topic's ``max.message.bytes`` raises
``PublishFailed`` with ``too_large`` set, which a caller answers 413, not "retry later".
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from confluent_kafka import KafkaError, KafkaException

from wapipe.edge import clients as kafka
from wapipe.log import get_logger

log = get_logger(__name__)


class PublishFailed(RuntimeError):
    """The broker did not acknowledge the write in time (or refused it). ``too_large``: the record
    is over the producer's or the topic's size limit, so no retry can ever store it."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


# Kafka's "record too large" answers: librdkafka's own check at produce() and the broker's
# MESSAGE_TOO_LARGE share code 10; RECORD_LIST_TOO_LARGE is a batch over the segment size.
_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})


def _failed(err: KafkaError) -> PublishFailed:
    return PublishFailed(err.str(), too_large=err.code() in _TOO_LARGE)


@dataclass(frozen=True)
class Delivered:
    topic: str
    partition: int
    offset: int


_Done = tuple[asyncio.Future, KafkaError | None, object]
Record = tuple[str, "bytes | None", "bytes | str | None", "list[tuple[str, bytes]] | None", "int | None"]


class _Batch:
    """The delivery reports of one ``publish_many`` (filled in by the poll)."""

    __slots__ = ("fut", "left", "delivered", "error")

    def __init__(self, fut: asyncio.Future, n: int) -> None:
        self.fut = fut
        self.left = n
        self.delivered: list[Delivered | None] = [None] * n
        self.error: KafkaError | None = None

    def answer(self, i: int, err: KafkaError | None, msg: object) -> bool:
        """Record one report; True when it was the last."""
        if err is not None:
            self.error = self.error or err
        else:
            self.delivered[i] = Delivered(msg.topic(), msg.partition(), msg.offset())  # type: ignore[attr-defined]
        self.left -= 1
        return self.left == 0

    def abandon(self, n: int) -> None:
        """``n`` records were never produced: nothing will answer them."""
        self.left -= n


class KafkaPublisher:
    def __init__(self, bootstrap: str, *, message_timeout_ms: int = 600, deadline_ms: int = 850,
                 linger_ms: int = 1, poll_mode: str = "loop", message_max_bytes: int | None = None,
                 **overrides: object) -> None:
        if poll_mode not in ("loop", "thread"):
            raise ValueError(f"poll_mode must be 'loop' or 'thread', not {poll_mode!r}")
        conf: dict[str, object] = {
            "message.timeout.ms": message_timeout_ms,
            "linger.ms": linger_ms,
            # A bounded local queue: when it is full the request is answered 503 at once.
            "queue.buffering.max.messages": 200_000,
            "queue.buffering.max.kbytes": 512 * 1024,
            "batch.num.messages": 10_000,
            "socket.connection.setup.timeout.ms": 1000,
            "reconnect.backoff.max.ms": 500,
            "error_cb": self._on_error,
        }
        if message_max_bytes is not None:
            # The largest record this producer may write (librdkafka's default is 1,000,000 bytes):
            # the caller derives it from the topic's max.message.bytes (wapipe/topics.py).
            conf["message.max.bytes"] = message_max_bytes
        conf.update(overrides)
        self._producer = kafka.producer(bootstrap, **conf)
        self._deadline = deadline_ms / 1000.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: list[_Done] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task | None = None
        self._poll_mode = poll_mode
        self._inflight = 0  # produced, delivery report not seen yet
        self._deadlines: deque[tuple[float, asyncio.Future]] = deque()  # publish order = deadline order
        self._wake: asyncio.Event | None = None
        self.brokers_down = False

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Call from the event loop's thread (the ASGI lifespan startup)."""
        self._loop = loop
        if self._poll_mode == "loop":
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._poll_in_loop(), name="kafka-poll")
        else:
            self._thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
            self._thread.start()

    def close(self, timeout: float = 10.0) -> int:
        """Stop polling, then flush what is still queued (waiting for acks). Called after
        the server drained its requests, so nobody awaits these futures any more. Returns how many
        messages were still unacknowledged at the end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return self.flush(timeout)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for every queued write's acknowledgement (blocking: call it off the loop); the
        number still unacknowledged at the timeout."""
        return self._producer.flush(timeout)

    # --- the write ------------------------------------------------------------------------
    async def publish(self, topic: str, value: bytes | None, key: bytes | str | None = None,
                      headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> Delivered:
        assert self._loop is not None, "start() first"
        fut = self._loop.create_future()
        where = {} if partition is None else {"partition": partition}
        try:
            self._producer.produce(topic, value, key, headers=headers, on_delivery=partial(self._collect, fut), **where)
        except BufferError as exc:
            raise PublishFailed("producer queue full") from exc
        except KafkaException as exc:
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            raise (_failed(err) if err is not None else PublishFailed(str(exc))) from exc
        self._inflight += 1
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()
        if self._poll_mode == "loop":
            # The poll task expires overdue futures; one deque instead of a timer per request.
            self._deadlines.append((self._loop.time() + self._deadline, fut))
            err, msg = await fut
        else:
            timer = self._loop.call_later(self._deadline, _expire, fut)
            err, msg = await fut
            timer.cancel()
        if err is _TIMED_OUT:
            raise PublishFailed(f"no broker ack within {self._deadline:.3f}s")
        if err is not None:
            raise _failed(err)
        return Delivered(msg.topic(), msg.partition(), msg.offset())

    async def publish_many(self, records: Sequence[Record]) -> list[Delivered]:
        """Write ``records`` and resume once the broker acknowledged every one of them: one future
        for the batch, not one per record (the send worker writes a batch of ledger entries, or of
        outcomes and results, per pacing tick). The first failure raises after all are answered;
        the records acknowledged before it stay written (each caller's protocol tolerates that)."""
        assert self._loop is not None, "start() first"
        if not records:
            return []
        batch = _Batch(self._loop.create_future(), len(records))
        produce = self._producer.produce
        try:
            for i, (topic, value, key, headers, partition) in enumerate(records):
                where = {} if partition is None else {"partition": partition}
                produce(topic, value, key, headers=headers, on_delivery=partial(self._collect_one, batch, i), **where)
                self._inflight += 1
        except BufferError as exc:
            batch.abandon(len(records) - i)
            raise PublishFailed("producer queue full") from exc
        except KafkaException as exc:
            batch.abandon(len(records) - i)
            err = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            raise (_failed(err) if err is not None else PublishFailed(str(exc))) from exc
        if self._wake is not None and not self._wake.is_set():
            self._wake.set()
        if self._poll_mode == "loop":
            self._deadlines.append((self._loop.time() + self._deadline, batch.fut))
            err, _ = await batch.fut
        else:
            timer = self._loop.call_later(self._deadline, _expire, batch.fut)
            err, _ = await batch.fut
            timer.cancel()
        if err is _TIMED_OUT:
            raise PublishFailed(f"no broker ack within {self._deadline:.3f}s")
        if batch.error is not None:
            raise _failed(batch.error)
        return batch.delivered  # type: ignore[return-value]

    def _collect_one(self, batch: "_Batch", i: int, err: KafkaError | None, msg: object) -> None:
        # runs inside poll(): one record of a batch answered; the batch's future when all are
        self._inflight -= 1
        if batch.answer(i, err, msg):
            self._done.append((batch.fut, None, None))
            self._inflight += 1  # _resolve counts every entry it answers

    def metadata_ok(self, topics: tuple[str, ...], timeout: float = 2.0) -> tuple[bool, str]:
        """A real metadata request: every topic exists and each partition has a leader."""
        try:
            md = self._producer.list_topics(timeout=timeout)
        except KafkaException as exc:
            return False, f"metadata: {exc}"
        if not md.brokers:
            return False, "no brokers"
        for t in topics:
            tm = md.topics.get(t)
            if tm is None or tm.error is not None:
                return False, f"topic {t} missing"
            if any(p.leader < 0 for p in tm.partitions.values()):
                return False, f"topic {t} has a partition without a leader"
        return True, "ok"

    # --- polling ------------------------------------------------------------------------------
    def _collect(self, fut: asyncio.Future, err: KafkaError | None, msg: object) -> None:
        self._done.append((fut, err, msg))  # runs inside poll(), in whichever thread polls

    async def _poll_in_loop(self) -> None:
        assert self._wake is not None and self._loop is not None
        loop_time = self._loop.time
        while not self._stop.is_set():
            try:
                self._producer.poll(0)
                if self._done:
                    batch, self._done = self._done, []
                    self._resolve(batch)
                dl = self._deadlines
                if dl:
                    now = loop_time()
                    while dl and dl[0][0] <= now:
                        _expire(dl.popleft()[1])
                    while dl and dl[0][1].done():  # answered: forget them
                        dl.popleft()
            except Exception:  # never let the one task that answers every request die
                log.exception("kafka poll failed")
            if self._inflight > 0:
                await asyncio.sleep(0.001)
            else:  # idle: sleep until a publish, but still serve error callbacks now and then
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 0.2)

    def _poll_forever(self) -> None:
        loop = self._loop
        assert loop is not None
        while not self._stop.is_set():
            self._producer.poll(0.05)
            if self._done:
                batch, self._done = self._done, []
                try:
                    loop.call_soon_threadsafe(self._resolve, batch)
                except RuntimeError:  # loop closed during shutdown
                    return

    def _resolve(self, batch: list[_Done]) -> None:
        """In the event loop: answer the waiting requests."""
        self._inflight -= len(batch)
        for fut, err, msg in batch:
            if err is None:
                self.brokers_down = False
            if not fut.done():  # already expired: the handler answered 503
                fut.set_result((err, msg))

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            if not self.brokers_down:
                log.warning("all brokers down")
            self.brokers_down = True
        elif err.fatal():
            log.error("fatal producer error", error=err.str())
        else:
            log.info("producer error", error=err.str())


def for_processor(bootstrap: str, *, message_max_bytes: int | None = None, linger_ms: int = 1) -> KafkaPublisher:
    """The writer of a stream processor (the send worker, the normaliser): a write waits up to two
    minutes for the broker (an outage) before it fails, and keyed records land where Faust's own
    producer would put them (``JAVA_PARTITIONER``). librdkafka, not Faust's aiokafka producer: a
    third of the CPU per write (bench/faust_hop.py). ``message_max_bytes``: for a processor that
    writes records over 1 MB (the normaliser's dead letters of big webhooks); ``linger_ms``: how long
    librdkafka gathers records into one request (fewer, larger requests cost the broker less)."""
    return KafkaPublisher(bootstrap, message_timeout_ms=120_000, deadline_ms=125_000, linger_ms=linger_ms,
                          partitioner=kafka.JAVA_PARTITIONER, message_max_bytes=message_max_bytes)


_TIMED_OUT = object()


def _expire(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result((_TIMED_OUT, None))


def now_ms() -> int:
    return int(time.time() * 1000)
