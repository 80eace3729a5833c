"""``TenantRegistry``: the compacted ``wa.tenants`` and ``wa.templates`` topics as an in-memory table.

A background thread reads both topics from the beginning (no consumer group offsets: every process
builds the whole table) and keeps reading, so a change published by ``wapipe tenants update`` or by
``wapipe tenants follow`` reaches every worker within a poll interval, without a restart. Tombstones
remove entries. Reads are thread-safe and return immutable models.

``wait_ready(timeout)`` returns once the registry has read up to the end offsets that existed when
it started (end of partition reached), i.e. it knows every tenant written before ``start()``.

``on_change(callback)`` registers ``callback(change: Change)``, called on the registry thread after
each applied record (keep it short; hand work off to your own loop). A failing callback is logged
and does not stop the registry.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from wapipe.avro import AvroSerde, SerdeError
from wapipe.config import Settings
from wapipe.edge.endpoint import confluent_conf
from wapipe.log import get_logger
from wapipe.tenants.models import TEMPLATE_RECORD, TENANT_RECORD, Template, Tenant, TenantStatus, template_key
from wapipe.topics import TEMPLATES, TENANTS

log = get_logger(__name__)


@dataclass(frozen=True)
class Change:
    kind: Literal["tenant", "template"]
    key: str
    old: Tenant | Template | None
    new: Tenant | Template | None  # None: removed (tombstone)


Listener = Callable[[Change], None]


def _watermarks(consumer: Consumer, tp: TopicPartition, *, timeout: float = 20.0) -> tuple[int, int]:
    """Watermarks, retried while a freshly created topic elects its leader."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return consumer.get_watermark_offsets(tp, timeout=5)
        except KafkaException as exc:
            if not exc.args[0].retriable() and exc.args[0].code() not in _LEADERLESS or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


_LEADERLESS = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
               KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._TIMED_OUT)


def _unindex(index: dict[str, set[str]], value: str, tenant_id: str) -> None:
    owners = index.get(value)
    if owners is not None:
        owners.discard(tenant_id)
        if not owners:
            del index[value]


class TenantRegistry:
    def __init__(self, settings: Settings, bootstrap: str, *, poll_timeout: float = 0.2) -> None:
        self._settings = settings
        self._bootstrap = bootstrap
        self._serde = AvroSerde.from_settings(settings)
        self._poll_timeout = poll_timeout
        self._lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        # phone_number_id / waba_id -> tenant ids; a disconnected former owner may linger beside the new one
        self._by_number: dict[str, set[str]] = {}
        self._by_waba: dict[str, set[str]] = {}
        self._templates: dict[str, Template] = {}
        self._listeners: list[Listener] = []
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending: set[tuple[str, int]] = set()  # partitions not yet read to their start-time end
        self._applied: dict[tuple[str, int], int] = {}  # (topic, partition) -> last applied offset

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> "TenantRegistry":
        if self._thread is not None:
            return self
        consumer = Consumer({
            **confluent_conf(self._bootstrap),
            "group.id": f"wapipe-tenant-registry-{uuid.uuid4().hex[:8]}",  # never committed
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        })
        assignment = []
        for topic in (TENANTS, TEMPLATES):
            md = consumer.list_topics(topic, timeout=10).topics[topic]
            if md.error is not None:
                consumer.close()
                raise RuntimeError(f"{topic}: {md.error.str()} (run `wapipe topics apply`)")
            for p in md.partitions:
                low, high = _watermarks(consumer, TopicPartition(topic, p))
                if high > low:
                    self._pending.add((topic, p))
                assignment.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        consumer.assign(assignment)
        if not self._pending:
            self._ready.set()
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="tenant-registry", daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once caught up with what existed at ``start()``; raises if the reader thread died."""
        ok = self._ready.wait(timeout)
        if self._error is not None:
            raise RuntimeError(f"tenant registry failed: {self._error}") from self._error
        return ok

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> "TenantRegistry":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reads ----------------------------------------------------------------------------
    def tenant(self, tenant_id: str) -> Tenant | None:
        with self._lock:
            return self._tenants.get(tenant_id)

    def tenants(self) -> list[Tenant]:
        with self._lock:
            return sorted(self._tenants.values(), key=lambda t: t.tenant_id)

    def tenant_for_number(self, phone_number_id: str) -> Tenant | None:
        """The tenant of a number; a connected one wins over a disconnected former owner."""
        with self._lock:
            return self._best(self._by_number.get(phone_number_id))

    def tenant_for_waba(self, waba_id: str) -> Tenant | None:
        """The tenant of a WABA; a connected one wins over a disconnected former owner."""
        with self._lock:
            return self._best(self._by_waba.get(waba_id))

    def _best(self, tenant_ids: set[str] | None) -> Tenant | None:
        found = [self._tenants[tid] for tid in tenant_ids or ()]
        if not found:
            return None
        return min(found, key=lambda t: (t.status == TenantStatus.DISCONNECTED, t.tenant_id))

    def number(self, phone_number_id: str):
        t = self.tenant_for_number(phone_number_id)
        return t.number(phone_number_id) if t else None

    def template(self, waba_id: str, name: str, language: str) -> Template | None:
        with self._lock:
            return self._templates.get(template_key(waba_id, name, language))

    def templates(self, tenant_id: str) -> list[Template]:
        with self._lock:
            return sorted((t for t in self._templates.values() if t.tenant_id == tenant_id),
                          key=lambda t: (t.name, t.language))

    def has_read(self, topic: str, partition: int, offset: int) -> bool:
        """True once the record at ``offset`` (or a later one) of that partition was applied:
        read-your-writes for a writer that knows where its record landed."""
        with self._lock:
            return self._applied.get((topic, partition), -1) >= offset

    def on_change(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    # --- the reader thread -------------------------------------------------------------------
    def _run(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                msg = consumer.poll(self._poll_timeout)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        self._reached((msg.topic(), msg.partition()))
                    elif err.fatal():
                        raise RuntimeError(err.str())
                    else:
                        log.warning("tenant_registry.kafka_error", error=err.str())
                    continue
                self._apply(msg.topic(), msg.key(), msg.value(), msg.offset())
                with self._lock:
                    self._applied[(msg.topic(), msg.partition())] = msg.offset()
        except BaseException as exc:  # surfaced by wait_ready
            self._error = exc
            log.error("tenant_registry.failed", error=str(exc))
            self._ready.set()
        finally:
            consumer.close()

    def _reached(self, tp: tuple[str, int]) -> None:
        if tp in self._pending:
            self._pending.discard(tp)
            if not self._pending:
                self._ready.set()

    def _apply(self, topic: str, raw_key: bytes | None, value: bytes | None, offset: int) -> None:
        key = raw_key.decode() if raw_key else ""
        try:
            if topic == TENANTS:
                new = Tenant.from_avro(self._serde.decode(value, TENANT_RECORD)) if value is not None else None
                change = self._put_tenant(key, new)
            else:
                new = Template.from_avro(self._serde.decode(value, TEMPLATE_RECORD)) if value is not None else None
                change = self._put_template(key, new)
        except (SerdeError, ValueError) as exc:
            # A record we cannot read is skipped loudly; the table keeps its last good state.
            log.error("tenant_registry.unreadable", topic=topic, key=key, offset=offset, error=str(exc))
            return
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(change)
            except Exception as exc:
                log.error("tenant_registry.listener_failed", listener=repr(cb), error=str(exc))

    def _put_tenant(self, key: str, new: Tenant | None) -> Change:
        with self._lock:
            old = self._tenants.pop(key, None)
            if old is not None:
                for n in old.numbers:
                    _unindex(self._by_number, n.phone_number_id, key)
                if old.waba_id:
                    _unindex(self._by_waba, old.waba_id, key)
            if new is not None:
                self._tenants[key] = new
                for n in new.numbers:
                    self._by_number.setdefault(n.phone_number_id, set()).add(key)
                if new.waba_id:
                    self._by_waba.setdefault(new.waba_id, set()).add(key)
        return Change("tenant", key, old, new)

    def _put_template(self, key: str, new: Template | None) -> Change:
        with self._lock:
            old = self._templates.pop(key, None)
            if new is not None:
                self._templates[key] = new
        return Change("template", key, old, new)
