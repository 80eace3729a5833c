"""The deletion-status page's data: ``wa.privacy.requests`` (compacted, key = request id) read
into memory by a background consumer, looked up by confirmation code.

The ingress only writes the first record of a request (RECEIVED); the privacy processors write
its progress to the same topic, and this view follows them. A request the ingress just wrote is
put in the view at once (read-your-writes), and the consumer's copy replaces it when it arrives.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from confluent_kafka import Message

from wapipe.avro import AvroSerde
from wapipe.edge.follow import TopicFollower
from wapipe.messages.privacy import PrivacyRequest
from wapipe.topics import PRIVACY_REQUESTS


@dataclass
class _Entry:
    record: PrivacyRequest
    from_topic: bool


class PrivacyStatusView:
    def __init__(self, bootstrap: str, serde: AvroSerde) -> None:
        self._serde = serde
        self._by_code: dict[str, _Entry] = {}
        self._code_of: dict[str, str] = {}  # request_id -> confirmation code
        self._lock = threading.Lock()
        # a record that does not decode is logged and counted by the follower (follow.unreadable)
        self._follower = TopicFollower(bootstrap, PRIVACY_REQUESTS, self._on_record, name="privacy-status")

    def start(self) -> None:
        # The ingress comes up whatever the broker's state: the topic is looked for in the thread.
        self._follower.start(wait_for_topics=True)

    def close(self) -> None:
        self._follower.close()

    def wait_ready(self, timeout: float) -> bool:
        return self._follower.caught_up(timeout)

    @property
    def ready(self) -> bool:
        return self._follower.ready

    def get(self, code: str) -> PrivacyRequest | None:
        with self._lock:
            e = self._by_code.get(code)
            return e.record if e else None

    def remember(self, record: PrivacyRequest) -> None:
        """What this process just wrote (acked), until the consumer delivers it."""
        with self._lock:
            if record.confirmation_code not in self._by_code:
                self._by_code[record.confirmation_code] = _Entry(record, from_topic=False)
                self._code_of[record.request_id] = record.confirmation_code

    # --- the follower's thread --------------------------------------------------------------
    def _on_record(self, m: Message) -> None:
        self._apply(m.key(), m.value())

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:  # tombstone: the request itself was erased
            rid = key.decode() if key else None
            with self._lock:
                code = self._code_of.pop(rid, None) if rid else None
                if code:
                    self._by_code.pop(code, None)
            return
        rec = PrivacyRequest.from_avro(self._serde.decode(value, "PrivacyRequest"))
        with self._lock:
            self._by_code[rec.confirmation_code] = _Entry(rec, from_topic=True)
            self._code_of[rec.request_id] = rec.confirmation_code
