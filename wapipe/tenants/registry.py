"""``TenantRegistry``: the compacted ``wa.tenants`` and ``wa.templates`` topics as an in-memory table.

A background thread reads both topics from the beginning (no consumer group offsets: every process
builds the whole table) and keeps reading, so a change published by ``wapipe tenants update`` or by
``wapipe tenants follow`` reaches every worker within a poll interval, without a restart. Tombstones
remove entries. Reads are thread-safe and return immutable models.

``wait_ready(timeout)`` returns True once the registry has read every record written before the
call (``wapipe.edge.follow``: the partitions' end offsets, asked fresh), i.e. it knows every tenant
written before it was asked.

``on_change(callback)`` registers ``callback(change: Change)``, called on the registry thread after
each applied record (keep it short; hand work off to your own loop). A failing callback is logged
and does not stop the registry.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from confluent_kafka import Message

from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.edge.follow import FollowError, TopicFollower
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
        self._lock = threading.RLock()
        self._tenants: dict[str, Tenant] = {}
        # phone_number_id / waba_id -> tenant ids; a disconnected former owner may linger beside the new one
        self._by_number: dict[str, set[str]] = {}
        self._by_waba: dict[str, set[str]] = {}
        self._templates: dict[str, Template] = {}
        self._listeners: list[Listener] = []
        self._follower = TopicFollower(bootstrap, (TENANTS, TEMPLATES), self._on_record, name="tenant-registry",
                                       poll_s=poll_timeout)

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> "TenantRegistry":
        self._follower.start()  # both topics from the beginning, in its thread (wapipe.edge.follow)
        return self

    def wait_ready(self, timeout: float = 30.0) -> bool:
        """True once every tenant and template written before this call has been read; False when
        that takes longer than ``timeout``; raises if the reader failed."""
        try:
            self._follower.wait_ready(timeout)
            return True
        except FollowError as exc:
            if self._follower.failure is not None:
                raise RuntimeError(f"tenant registry failed: {self._follower.failure}") from exc
            return False

    def close(self) -> None:
        self._follower.close()

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
        return self._follower.has_read(topic, partition, offset)

    def on_change(self, callback: Listener) -> None:
        with self._lock:
            self._listeners.append(callback)

    # --- the follower's thread ------------------------------------------------------------
    def _on_record(self, m: Message) -> None:
        self._apply(m.topic(), m.key(), m.value())

    def _apply(self, topic: str, raw_key: bytes | None, value: bytes | None) -> None:
        # A record that does not decode raises here: the follower skips it loudly (follow.unreadable)
        # and the table keeps its last good state.
        key = raw_key.decode() if raw_key else ""
        if topic == TENANTS:
            new = Tenant.from_avro(self._serde.decode(value, TENANT_RECORD)) if value is not None else None
            change = self._put_tenant(key, new)
        else:
            new = Template.from_avro(self._serde.decode(value, TEMPLATE_RECORD)) if value is not None else None
            change = self._put_template(key, new)
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
