"""Follow topics into memory: every partition read from the beginning, forever, in one thread.

The one follower of the views that every process holds whole (the key ring, the tenant registry,
the privacy registry and status page, the ERP's command links). No consumer group offsets are
committed: each process reads the whole topic. The view's ``handle(message)`` is called on the
follower's thread for each record (tombstones included), in offset order per partition.

Readiness has one style, read-your-writes: ``wait_ready(timeout)`` returns once every record
written to the topics before the call has been handled (the partitions' high watermarks, asked
fresh of the brokers, compared with what was handled); ``has_read`` answers it for one record a
writer knows the place of. A record ``handle`` raises on (a poison record) is logged, counted in
``unreadable`` and passed: the view keeps its last good state and the records after it are read.
A fatal client error stops the follower; ``wait_ready`` then raises it.

A second client answers the watermark queries: confluent-kafka's ``Consumer`` must not be called
from two threads at once (a query would wait behind the thread's ``consume``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from wapipe.edge.endpoint import Endpoint, confluent_conf
from wapipe.log import get_logger

log = get_logger(__name__)


class FollowError(RuntimeError):
    """A follower could not start or catch up (no such topic, not read to its end in time, failed)."""


class TopicFollower:
    """Calls ``handle(message)`` for every record of ``topics`` (all partitions, from the beginning)."""

    def __init__(self, bootstrap: Endpoint, topics: str | Sequence[str], handle: Callable[[Message], None], *,
                 name: str, error: type[Exception] = FollowError, poll_s: float = 0.2, batch: int = 500) -> None:
        self.bootstrap = bootstrap
        self.topics: tuple[str, ...] = (topics,) if isinstance(topics, str) else tuple(topics)
        self.name = name
        self.unreadable = 0  # records ``handle`` raised on
        self._handle = handle
        self._error = error
        self._poll_s, self._batch = poll_s, batch
        self._cond = threading.Condition()
        self._pos: dict[tuple[str, int], int] = {}  # next offset to handle, per partition
        self._partitions: list[tuple[str, int]] = []
        self._found = threading.Event()  # the partitions are known and assigned
        self._ended: set[tuple[str, int]] = set()  # partitions read to an end at least once
        self._caught_up_once = False  # a wait_ready returned
        self._consumer: Consumer | None = None
        self._probe: Consumer | None = None
        self._probe_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def start(self, *, wait_for_topics: bool = False) -> "TopicFollower":
        """Find the partitions and start reading them. A missing topic raises ``error``; with
        ``wait_for_topics`` (a server that must come up whatever the broker's state) nothing
        blocks nor raises here: the thread looks for the topics until they are there."""
        if self._thread is not None:
            return self
        conf = confluent_conf(self.bootstrap, **{"enable.auto.commit": False, "isolation.level": "read_committed"})
        consumer = Consumer({**conf, "group.id": f"wapipe-{self.name}-{uuid.uuid4().hex}",  # never committed
                             "enable.partition.eof": True})
        if not wait_for_topics:
            try:
                self._assign(consumer, self._partitions_of(consumer))
            except BaseException:
                consumer.close()
                raise
        self._consumer = consumer
        self._probe = Consumer({**conf, "group.id": f"wapipe-{self.name}-probe-{uuid.uuid4().hex}"})
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def _partitions_of(self, consumer: Consumer) -> list[tuple[str, int]]:
        partitions = []
        for topic in self.topics:
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            if md.error is not None or not md.partitions:
                why = md.error.str() if md.error is not None else "no partitions"
                raise self._error(f"{topic}: {why} (run `wapipe topics apply`)")
            partitions += [(topic, p) for p in sorted(md.partitions)]
        return partitions

    def _assign(self, consumer: Consumer, partitions: list[tuple[str, int]]) -> None:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in partitions])
        self._partitions = partitions
        self._found.set()

    def _find_partitions(self, consumer: Consumer) -> bool:
        """In the thread (``wait_for_topics``): look until the topics are there (False: stopped first)."""
        said = False
        while not self._stop.is_set():
            try:
                self._assign(consumer, self._partitions_of(consumer))
                return True
            except Exception as exc:
                if not said:
                    said = True
                    log.info("follow.waiting_for_topics", follower=self.name, error=str(exc)[:300])
            self._stop.wait(0.5)
        return False

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None

    def __enter__(self) -> "TopicFollower":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- readiness ----------------------------------------------------------------------------
    def wait_ready(self, timeout: float = 30.0) -> None:
        """Return once every record written to the topics before this call has been handled;
        ``error`` when that takes longer than ``timeout`` or the follower failed."""
        if self._probe is None:
            raise self._error(f"{self.name} not started")
        deadline = time.monotonic() + timeout
        if not self._found.wait(timeout):
            raise self._error(f"{', '.join(self.topics)}: not found within {timeout}s")
        targets = {tp: self._high_watermark(tp, deadline) for tp in self._partitions}
        with self._cond:
            while not all(self._pos.get(tp, 0) >= end for tp, end in targets.items()):
                if self._failure is not None:
                    raise self._error(f"{self.name} failed: {self._failure}") from self._failure
                left = deadline - time.monotonic()
                if left <= 0:
                    behind = {f"{t}[{p}]": (self._pos.get((t, p), 0), end) for (t, p), end in targets.items()
                              if self._pos.get((t, p), 0) < end}
                    raise self._error(f"{', '.join(self.topics)} not caught up within {timeout}s: {behind}")
                self._cond.wait(min(left, 0.5))
            self._caught_up_once = True

    def caught_up(self, timeout: float = 30.0) -> bool:
        """``wait_ready`` as a yes/no: False when not caught up within ``timeout`` (or failed)."""
        try:
            self.wait_ready(timeout)
            return True
        except Exception:
            return False

    def has_read(self, topic: str, partition: int, offset: int) -> bool:
        """True once the record at ``offset`` of that partition (or a later one) has been handled."""
        with self._cond:
            return self._pos.get((topic, partition), 0) > offset

    @property
    def ready(self) -> bool:
        """Without waiting: a ``wait_ready`` returned, or every partition has been read to an end
        (the brokers' end when it was reached) at least once; ``wait_ready`` is the same as of the
        moment it is called."""
        with self._cond:
            return self._caught_up_once or (self._found.is_set() and self._ended >= set(self._partitions))

    @property
    def failure(self) -> BaseException | None:
        return self._failure

    def _high_watermark(self, tp: tuple[str, int], deadline: float) -> int:
        while True:
            try:
                with self._probe_lock:
                    if self._probe is None:
                        raise self._error(f"{self.name} closed")
                    left = max(0.5, min(deadline - time.monotonic(), 5.0))
                    return self._probe.get_watermark_offsets(TopicPartition(*tp), timeout=left, cached=False)[1]
            except KafkaException as exc:  # leader election on a young topic, a broker restart
                if time.monotonic() >= deadline:
                    raise self._error(f"{tp[0]}[{tp[1]}]: no watermark: {exc}") from exc
                time.sleep(0.2)

    # --- the reading thread -------------------------------------------------------------------
    def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        if not self._found.is_set() and not self._find_partitions(consumer):
            return
        while not self._stop.is_set():
            try:
                msgs = consumer.consume(self._batch, timeout=self._poll_s)
            except KafkaException as exc:  # the broker away: the next consume tries again
                log.warning("follow.consume_failed", follower=self.name, error=str(exc)[:300])
                time.sleep(0.5)
                continue
            for m in msgs:
                err = m.error()
                tp = (m.topic(), m.partition())
                if err is None:
                    self._one(m)
                    with self._cond:
                        self._pos[tp] = m.offset() + 1
                elif err.code() == KafkaError._PARTITION_EOF:
                    with self._cond:
                        self._pos[tp] = max(self._pos.get(tp, 0), m.offset())
                        self._ended.add(tp)
                elif err.fatal():
                    log.error("follow.failed", follower=self.name, error=err.str())
                    with self._cond:
                        self._failure = KafkaException(err)
                        self._cond.notify_all()
                    return
                else:
                    log.warning("follow.kafka_error", follower=self.name, error=err.str())
            if msgs:
                with self._cond:
                    self._cond.notify_all()

    def _one(self, m: Message) -> None:
        try:
            self._handle(m)
        except Exception as exc:  # a poison record: logged and passed, the view goes on
            self.unreadable += 1
            log.error("follow.unreadable", follower=self.name, topic=m.topic(), partition=m.partition(),
                      offset=m.offset(), error=f"{type(exc).__name__}: {str(exc)[:300]}")
