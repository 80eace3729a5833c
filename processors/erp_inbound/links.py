"""Which SendCommand sent a message: ``(tenant_id, wamid ref) -> CommandLink``, read from ``wa.send.results``.

The send worker publishes a ``SendResult`` with the keyed ref of Meta's wamid (``wref.…``,
wapipe/privacy/wamids.py) for every command Meta accepted. A user's reply names our message by its
wamid (``context.id``), a reaction by ``reaction.message_id``, a status by ``id``: the normaliser
and this processor turn those into the same ref, so the ref is the join key and no wamid is kept.

A background thread reads every partition of ``wa.send.results`` from the beginning (no consumer
group, nothing committed) into memory. A lookup that misses reads the topic up to its current end
first (the result of a command is published before its wamid can reach a user), so a miss is an
answer: not a message a command of this tenant sent. Lookups are scoped by tenant: a ref named by
one tenant's webhook never finds another tenant's command.

Memory: one entry per accepted command within the topic's retention (``retention_ms``, 7 days by
default), about 300 bytes each.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.endpoint import Endpoint, confluent_conf
from wapipe.log import get_logger
from wapipe.topics import SEND_RESULTS

log = get_logger(__name__)

# Results that carry the wamid Meta gave the command's message. Not DUPLICATE: it repeats the first
# command's wamid under the second command's id, and the message is the first's.
_SENT = frozenset({"ACCEPTED", "UNKNOWN"})


@dataclass(frozen=True, slots=True)
class CommandLink:
    idempotency_key: str
    command_id: str | None
    campaign_id: str | None
    message_ref: str

    def avro(self) -> dict:
        return {"idempotency_key": self.idempotency_key, "command_id": self.command_id,
                "campaign_id": self.campaign_id, "message_ref": self.message_ref}


class CommandLinks:
    def __init__(self, bootstrap: Endpoint, *, serde: AvroSerde | None = None, topic: str = SEND_RESULTS,
                 catch_up_timeout: float = 10.0) -> None:
        self._bootstrap = bootstrap
        self._serde = serde or AvroSerde()
        self._topic = topic
        self._catch_up_timeout = catch_up_timeout
        self._cond = threading.Condition()
        self._links: dict[tuple[str, str], CommandLink] = {}
        self._pos: dict[int, int] = {}
        self._partitions: list[int] = []
        self._consumer: Consumer | None = None
        self._probe: Consumer | None = None  # watermark queries: the reading thread owns _consumer
        self._probe_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.unreadable = 0  # results that did not decode (the send worker's dead letters hold them)

    def start(self) -> "CommandLinks":
        conf = confluent_conf(self._bootstrap, **{"enable.auto.commit": False})
        self._consumer = Consumer({**conf, "group.id": f"wapipe-erp-links-{uuid.uuid4().hex}",
                                   "enable.partition.eof": True})
        md = self._consumer.list_topics(self._topic, timeout=10).topics[self._topic]
        if md.error is not None:
            raise KafkaException(md.error)
        self._partitions = sorted(md.partitions)
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in self._partitions])
        self._probe = Consumer({**conf, "group.id": f"wapipe-erp-links-probe-{uuid.uuid4().hex}"})
        self._thread = threading.Thread(target=self._run, name="erp-links", daemon=True)
        self._thread.start()
        return self

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

    def __enter__(self) -> "CommandLinks":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        assert self._consumer is not None
        while not self._stop.is_set():
            try:
                msgs = self._consumer.consume(500, timeout=0.2)
            except KafkaException as exc:  # broker away: the next consume tries again
                log.warning("erp_links.consume_failed", error=str(exc)[:300])
                time.sleep(0.5)
                continue
            if not msgs:
                continue
            with self._cond:
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            self._pos[m.partition()] = max(self._pos.get(m.partition(), 0), m.offset())
                        continue
                    self.apply(m.value())
                    self._pos[m.partition()] = m.offset() + 1
                self._cond.notify_all()

    def apply(self, value: bytes | None) -> None:
        """Take one wa.send.results record into the index (the reading thread calls it, lock held)."""
        if not value:
            return
        try:
            r = self._serde.decode(value, "SendResult")
        except SerdeError:
            self.unreadable += 1
            return
        ref = r.get("wamid")
        if not ref or r.get("outcome") not in _SENT:
            return
        # the first result naming the wamid wins: a repeated final result changes nothing
        self._links.setdefault((r["tenant_id"], ref), CommandLink(r["idempotency_key"], r.get("command_id"),
                                                                  r.get("campaign_id"), ref))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until every result published before this call has been read."""
        self._catch_up(timeout)

    def _catch_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        targets = {p: self._high_watermark(p, deadline) for p in self._partitions}
        with self._cond:
            while not all(self._pos.get(p, 0) >= t for p, t in targets.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{self._topic} not read to its end within {timeout}s")
                self._cond.wait(min(left, 0.5))

    def _high_watermark(self, partition: int, deadline: float) -> int:
        while True:
            try:
                with self._probe_lock:
                    if self._probe is None:
                        raise RuntimeError("CommandLinks not started")
                    return self._probe.get_watermark_offsets(TopicPartition(self._topic, partition),
                                                             timeout=max(0.5, min(deadline - time.monotonic(), 5.0)),
                                                             cached=False)[1]
            except KafkaException:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def get(self, tenant_id: str, ref: str | None, *, wait: bool = True) -> CommandLink | None:
        """The command of ``tenant_id`` whose message has this wamid ref, or None (with ``wait``,
        read up to the end of ``wa.send.results`` before saying so)."""
        if not ref or not tenant_id:
            return None
        with self._cond:
            found = self._links.get((tenant_id, ref))
        if found is None and wait:
            self._catch_up(self._catch_up_timeout)
            with self._cond:
                found = self._links.get((tenant_id, ref))
        return found
