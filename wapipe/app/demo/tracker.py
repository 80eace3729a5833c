"""Reads a demo run's SendResults and dead letters back from Kafka, from the offsets they had
before the run started."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.endpoint import Endpoint
from wapipe.log import get_logger

log = get_logger(__name__)

FINAL_OUTCOMES = {"ACCEPTED", "REJECTED", "FAILED", "UNKNOWN", "DEAD", "EXPIRED", "CANCELLED", "DUPLICATE"}


class Tracker:
    """Reads this run's SendResults and dead letters from the offsets they had before it started."""

    def __init__(self, bootstrap: Endpoint, serde) -> None:
        from confluent_kafka import TopicPartition

        from wapipe.topics import SEND_DEAD, SEND_RESULTS

        self.serde = serde
        self.final: dict[str, dict] = {}  # command_id -> latest final result
        self.seen: dict[str, str] = {}  # command_id -> latest outcome (any)
        self.results_read = 0  # every result read, also of commands of earlier runs: the pipeline moves
        self.dead_letters = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._c = make_consumer(bootstrap, f"wapipe-demo-{uuid.uuid4().hex[:8]}")  # never commits: assigned below
        assign = []
        for topic in (SEND_RESULTS, SEND_DEAD):
            md = self._c.list_topics(topic, timeout=10).topics[topic]
            for p in md.partitions:
                _low, high = self._c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                assign.append(TopicPartition(topic, p, high))
        self._c.assign(assign)
        self._results_topic, self._dead_topic = SEND_RESULTS, SEND_DEAD
        self._thread = threading.Thread(target=self._run, name="demo-tracker", daemon=True)

    def start(self) -> "Tracker":
        self._thread.start()
        return self

    def _run(self) -> None:
        from wapipe.topics import SEND_REQUESTED

        while not self._stop.is_set():
            for m in self._c.consume(2000, timeout=0.3):
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    if m.topic() == self._results_topic:
                        r = self.serde.decode(m.value(), "SendResult")
                        with self._lock:
                            self.results_read += 1
                            self.seen[r["command_id"]] = r["outcome"]
                            if r["outcome"] in FINAL_OUTCOMES:
                                self.final[r["command_id"]] = r
                    else:
                        d = self.serde.decode(m.value(), "DeadLetter")
                        if d.get("source_topic") == SEND_REQUESTED:
                            with self._lock:
                                self.dead_letters += 1
                except Exception as exc:  # a record we cannot read is the pipeline's to report
                    log.warning("demo tracker could not decode a record", topic=m.topic(), error=str(exc))

    def outcomes(self, command_ids: set[str] | None = None) -> Counter:
        with self._lock:
            return Counter(r["outcome"] for cid, r in self.final.items() if command_ids is None or cid in command_ids)

    def finished(self, command_ids: set[str]) -> int:
        ids = command_ids.copy()  # the publishing thread adds to it meanwhile (one C call: atomic)
        with self._lock:
            return sum(1 for cid in ids if cid in self.final)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._c.close()
