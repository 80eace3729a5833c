"""Follow a topic from the beginning in a background thread, with read-your-writes catch-up."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from wapipe.edge.endpoint import confluent_conf
from wapipe.log import get_logger
from wapipe.privacy.errors import PrivacyError

log = get_logger(__name__)


class TopicFollower:
    """Calls ``handle(message)`` for every record of ``topic`` (all partitions, from the beginning)."""

    def __init__(self, bootstrap: str, topic: str, handle: Callable[[Message], None], *, name: str = "follower") -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._handle = handle
        self._name = name
        self._cond = threading.Condition()
        self._pos: dict[int, int] = {}
        self._partitions: list[int] = []
        self._consumer: Consumer | None = None
        self._probe: Consumer | None = None
        self._probe_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        if self._thread is not None:
            return
        conf = {**confluent_conf(self.bootstrap), "enable.auto.commit": False, "isolation.level": "read_committed"}
        self._consumer = Consumer({**conf, "group.id": f"wapipe-{self._name}-{uuid.uuid4().hex}",
                                   "enable.partition.eof": True})
        self._probe = Consumer({**conf, "group.id": f"wapipe-{self._name}-probe-{uuid.uuid4().hex}"})
        md = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        if md.error is not None:
            raise PrivacyError(f"{self.topic}: {md.error}")
        self._partitions = sorted(md.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in self._partitions])
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for c in (self._consumer, self._probe):
            if c is not None:
                c.close()
        self._consumer = self._probe = None

    def _run(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                msgs = self._consumer.consume(500, timeout=0.2)
            except KafkaException as exc:  # pragma: no cover
                log.error("follow.consume_failed", topic=self.topic, error=str(exc))
                time.sleep(1)
                continue
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        with self._cond:
                            self._pos[m.partition()] = max(self._pos.get(m.partition(), 0), m.offset())
                    continue
                try:
                    self._handle(m)
                except Exception as exc:  # one bad record must not stop the view
                    log.error("follow.handle_failed", topic=self.topic, offset=m.offset(), error=str(exc))
                with self._cond:
                    self._pos[m.partition()] = m.offset() + 1
            if msgs:
                with self._cond:
                    self._cond.notify_all()

    def catch_up(self, timeout: float = 30.0) -> None:
        """Return once every record written before this call has been handled."""
        if self._probe is None:
            raise PrivacyError(f"{self._name} not started")
        deadline = time.monotonic() + timeout
        targets = {p: self._high(p, deadline) for p in self._partitions}
        with self._cond:
            while not all(self._pos.get(p, 0) >= t for p, t in targets.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PrivacyError(f"{self.topic} not caught up within {timeout}s")
                self._cond.wait(min(left, 0.5))

    def _high(self, partition: int, deadline: float) -> int:
        while True:
            try:
                with self._probe_lock:
                    assert self._probe is not None
                    return self._probe.get_watermark_offsets(TopicPartition(self.topic, partition),
                                                             timeout=5.0, cached=False)[1]
            except KafkaException as exc:
                if time.monotonic() >= deadline:
                    raise PrivacyError(f"{self.topic}[{partition}]: no watermark: {exc}") from exc
                time.sleep(0.2)
