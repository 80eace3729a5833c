"""The deletion-status page's data: ``wa.privacy.requests`` (compacted, key = request id) read
into memory by a background consumer, looked up by confirmation code.

The ingress only writes the first record of a request (RECEIVED); the privacy processors write
its progress to the same topic, and this view follows them. A request the ingress just wrote is
put in the view at once (read-your-writes), and the consumer's copy replaces it when it arrives.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, TopicPartition

from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.endpoint import confluent_conf
from wapipe.log import get_logger
from wapipe.topics import PRIVACY_REQUESTS

log = get_logger(__name__)

_OFFSET_BEGINNING = -2


@dataclass
class _Entry:
    record: dict
    from_topic: bool


class PrivacyStatusView:
    def __init__(self, bootstrap: str, serde: AvroSerde) -> None:
        self._serde = serde
        self._bootstrap = bootstrap
        self._by_code: dict[str, _Entry] = {}
        self._code_of: dict[str, str] = {}  # request_id -> confirmation code
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread: threading.Thread | None = None
        self.unreadable = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="privacy-status", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def wait_ready(self, timeout: float) -> bool:
        return self._caught_up.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._caught_up.is_set()

    def get(self, code: str) -> dict | None:
        with self._lock:
            e = self._by_code.get(code)
            return dict(e.record) if e else None

    def remember(self, record: dict) -> None:
        """What this process just wrote (acked), until the consumer delivers it."""
        with self._lock:
            if record["confirmation_code"] not in self._by_code:
                self._by_code[record["confirmation_code"]] = _Entry(record, from_topic=False)
                self._code_of[record["request_id"]] = record["confirmation_code"]

    # --- the consumer thread ---------------------------------------------------------------
    def _run(self) -> None:
        c = Consumer({
            **confluent_conf(self._bootstrap),
            "group.id": f"ingress-privacy-view-{uuid.uuid4().hex[:8]}",  # never committed: assign()
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        })
        try:
            parts = self._assign(c)
            pending_eof = set(parts)
            if not pending_eof:
                self._caught_up.set()
            while not self._stop.is_set():
                msg = c.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        pending_eof.discard(msg.partition())
                        if not pending_eof:
                            self._caught_up.set()
                    else:
                        log.info("privacy view consumer error", error=msg.error().str())
                    continue
                self._apply(msg.key(), msg.value())
        except Exception:  # pragma: no cover - keeps the server up; readiness shows it
            log.exception("privacy status view stopped")
        finally:
            c.close()

    def _assign(self, c: Consumer) -> list[int]:
        while not self._stop.is_set():
            try:
                md = c.list_topics(PRIVACY_REQUESTS, timeout=5).topics[PRIVACY_REQUESTS]
                if md.error is None and md.partitions:
                    ids = sorted(md.partitions)
                    c.assign([TopicPartition(PRIVACY_REQUESTS, p, _OFFSET_BEGINNING) for p in ids])
                    return ids
            except Exception as exc:
                log.info("privacy view waiting for topic metadata", error=str(exc))
            time.sleep(0.5)
        return []

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # tombstone: the request itself was erased
            rid = key.decode() if key else None
            with self._lock:
                code = self._code_of.pop(rid, None) if rid else None
                if code:
                    self._by_code.pop(code, None)
            return
        try:
            rec = self._serde.decode(value, "PrivacyRequest")
        except SerdeError as exc:
            self.unreadable += 1
            log.warning("unreadable privacy request record", error=str(exc))
            return
        with self._lock:
            self._by_code[rec["confirmation_code"]] = _Entry(rec, from_topic=True)
            self._code_of[rec["request_id"]] = rec["confirmation_code"]
