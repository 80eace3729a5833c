"""Reading what the ERP receives (``wa.erp.inbound``), opened, for one tenant; marking messages read.

    with ErpConsumer.from_settings(settings, bootstrap, tenant_id="acme") as inbox:
        for ev in inbox.poll(1.0):
            if ev.command is not None:            # a reply, button/list answer, reaction or status
                handle(ev.command.idempotency_key, ev)
            if ev.kind != "STATUS":
                inbox.mark_read(ev)               # blue ticks at the user's end
        inbox.commit()                            # after the ERP stored what it read

``wa.erp.inbound`` is keyed by tenant with Kafka's Java partitioner, so the consumer reads only its
tenant's partition (``partition_for``). Records of other tenants that share it are ignored and
counted (``foreign``); a sealed value is opened only when the record is this tenant's, the value is
under its subject's key, and that subject's keys were made for this tenant (``KeyRing.tenants_of``).
A record that does not decode is skipped with its offset and reason (``skipped``): it never stops
the stream.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import KafkaError, TopicPartition

from producers.erp.client import PublishError
from wapipe import topics as T
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import JAVA_PARTITIONER, partition_for
from wapipe.edge.clients import consumer as make_consumer
from wapipe.edge.clients import producer as make_producer
from wapipe.edge.endpoint import Endpoint, endpoint_for
from wapipe.messages.erp import ErpInbound, ReadCommand
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import PrivacyError, SubjectErased, UnsealError


class Keys(Protocol):
    """A ``KeyRing``: opens sealed values, says whose a subject is, seals the read command's wamid."""

    def unseal(self, sealed: dict) -> dict: ...
    def tenants_of(self, subject_id: str) -> set[str]: ...
    def seal(self, tenant_id: str, subject_id: str, data: dict) -> dict: ...


@dataclass(frozen=True, slots=True)
class Command:
    """The SendCommand an event answers or reports on."""

    idempotency_key: str
    command_id: str | None
    campaign_id: str | None
    message_ref: str


@dataclass(frozen=True, slots=True)
class InboundEvent:
    event_id: str
    tenant_id: str
    kind: str  # MESSAGE, BUTTON_REPLY, LIST_REPLY, REACTION, FAILED, STATUS
    phone_number_id: str
    subject_id: str | None
    message_ref: str
    message_type: str | None
    status: str | None
    command: Command | None
    errors: tuple[dict, ...]
    timestamp: dt.datetime
    received_at: dt.datetime
    content: dict | None = None  # opened pii; None: not stored, erased or unreadable
    erased: bool = False
    content_error: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def message(self) -> dict:
        """Meta's message object (empty for statuses and unopened content)."""
        m = self._content("message")
        return m if isinstance(m, dict) else {}

    def _content(self, key: str) -> Any:
        return self.content.get(key) if isinstance(self.content, dict) else None

    @property
    def sender(self) -> str | None:
        return _str(self._content("from"))

    @property
    def profile_name(self) -> str | None:
        return _str(self._content("profile_name"))

    @property
    def wamid(self) -> str | None:
        """The clear wamid (personal data: keep it only as long as you need it)."""
        return _str(self.message.get("id")) or _str(self._content("wamid"))

    @property
    def text(self) -> str | None:
        body = self.message.get("text")
        return _str(body.get("body")) if isinstance(body, dict) else None

    @property
    def reply(self) -> dict | None:
        """A button or list answer: ``{"id", "title"}`` (interactive) or ``{"payload", "text"}``
        (a template's quick-reply button)."""
        if self.kind not in ("BUTTON_REPLY", "LIST_REPLY"):
            return None
        inter = self.message.get("interactive")
        if isinstance(inter, dict):
            sub = inter.get(inter["type"]) if isinstance(inter.get("type"), str) else None
            return sub if isinstance(sub, dict) and sub else None
        button = self.message.get("button")
        return button if isinstance(button, dict) and button else None

    @property
    def reaction(self) -> str | None:
        """The emoji ("" when the user removed their reaction)."""
        r = self.message.get("reaction")
        return (_str(r.get("emoji")) or "") if isinstance(r, dict) else None


def _str(v: Any) -> str | None:
    return v if isinstance(v, str) else None


class ErpConsumer:
    def __init__(self, bootstrap: Endpoint, tenant_id: str, *, keys: Keys, serde: AvroSerde | None = None,
                 group_id: str | None = None, from_beginning: bool = True, timeout: float = 30.0) -> None:
        if not tenant_id:
            raise ValueError("an ERP consumer reads for one tenant")
        self.tenant_id = tenant_id
        self.keys = keys
        self.serde = serde or AvroSerde()
        self.timeout = timeout
        self._c = make_consumer(bootstrap, group_id or f"erp-inbound-{tenant_id}",
                                **{"auto.offset.reset": "earliest" if from_beginning else "latest"})
        md = self._c.list_topics(T.ERP_INBOUND, timeout=10).topics[T.ERP_INBOUND]
        self.partition = partition_for(tenant_id, len(md.partitions))
        self._c.assign([TopicPartition(T.ERP_INBOUND, self.partition)])
        self._bootstrap = bootstrap
        self._producer = None
        self._lock = threading.Lock()
        self.foreign = 0  # records of other tenants on the same partition, ignored
        self.refused: list[tuple[int, str]] = []  # (offset, why) records of ours whose content was not opened
        self.skipped: list[tuple[int, str]] = []  # (offset, why) records that do not decode
        self.last_error: str | None = None  # why the last poll stopped early (the key ring did not answer)

    @classmethod
    def from_settings(cls, settings: Any, bootstrap: Endpoint, tenant_id: str, **kw: Any) -> "ErpConsumer":
        """With the pipeline's own KeyRing (started) and the settings' Kafka security, as
        ``ErpProducer.from_settings``."""
        from wapipe.privacy.kek import load_kek
        from wapipe.privacy.keyring import KeyRing

        bootstrap = endpoint_for(settings, bootstrap)
        ring = KeyRing(settings, bootstrap, load_kek(settings)).start()
        ring.wait_ready(30)  # raises when the keys are not read within 30 s
        c = cls(bootstrap, tenant_id, keys=ring, serde=AvroSerde.from_settings(settings), **kw)
        c._ring = ring  # closed with the consumer
        return c

    # --- reading -----------------------------------------------------------------------------
    def poll(self, timeout: float = 1.0, max_records: int = 500) -> list[InboundEvent]:
        """The tenant's next events. When the key ring cannot answer (the broker away), the events
        before the record it could not open are returned and that record comes again next time
        (``last_error`` says why); nothing is skipped for it."""
        out = []
        self.last_error = None
        for m in self._c.consume(max_records, timeout=timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    self.skipped.append((-1, f"kafka: {err.str()}"))
                continue
            try:
                ev = self._event(m.offset(), m.value())
            except PrivacyError as exc:  # not the record's fault (erased/unreadable are handled in _event)
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._c.seek(TopicPartition(m.topic(), m.partition(), m.offset()))
                break
            if ev is not None:
                out.append(ev)
        return out

    def iter(self, *, idle: float = 10.0) -> Iterator[InboundEvent]:
        """Events as they come, until ``idle`` seconds pass without one."""
        import time

        last = time.monotonic()
        while time.monotonic() - last < idle:
            batch = self.poll(0.5)
            if batch:
                last = time.monotonic()
            yield from batch

    def _event(self, offset: int, value: bytes | None) -> InboundEvent | None:
        try:
            r = ErpInbound.from_avro(self.serde.decode(value, "ErpInbound"))
        except SerdeError as exc:
            self.skipped.append((offset, str(exc)[:300]))
            return None
        except (KeyError, ValueError) as exc:  # decoded, yet no ErpInbound: a required field missing
            self.skipped.append((offset, f"not an ErpInbound: {type(exc).__name__}: {exc}"[:300]))
            return None
        if r.tenant_id != self.tenant_id:
            self.foreign += 1
            return None
        content, erased, problem = None, False, None
        if r.pii is not None:
            try:
                content = self._open(r.subject_id, r.pii)
            except SubjectErased:
                erased = True
            except (UnsealError, PermissionError) as exc:
                problem = str(exc)[:300]
                self.refused.append((offset, problem))
        cmd = r.command
        try:
            extra = json.loads(r.extra or "{}")
        except ValueError:
            extra = {}
        return InboundEvent(
            event_id=r.event_id, tenant_id=r.tenant_id, kind=str(r.kind), phone_number_id=r.phone_number_id,
            subject_id=r.subject_id, message_ref=r.message_ref, message_type=r.message_type, status=r.status,
            command=None if cmd is None else Command(idempotency_key=cmd.idempotency_key, command_id=cmd.command_id,
                                                     campaign_id=cmd.campaign_id, message_ref=cmd.message_ref),
            errors=tuple(e.to_avro() for e in r.errors), timestamp=r.timestamp, received_at=r.received_at,
            content=content, erased=erased, content_error=problem, extra=extra if isinstance(extra, dict) else {})

    def _open(self, subject: str | None, sealed: Sealed) -> dict:
        """The record's sealed content, opened only with this tenant's subject's key."""
        if not subject or not sealed.key_id.startswith(subject + "/"):
            raise PermissionError("sealed content is not under the record's subject's key")
        if self.tenant_id not in self.keys.tenants_of(subject):
            raise PermissionError(f"subject {subject} is not tenant {self.tenant_id}'s")
        return self.keys.unseal(sealed.to_avro())

    def commit(self) -> None:
        """Commit what ``poll`` returned so far (after the ERP stored it)."""
        try:
            self._c.commit(asynchronous=False)
        except Exception as exc:  # nothing read yet: nothing to commit
            if "NO_OFFSET" not in str(exc):
                raise

    # --- mark as read ------------------------------------------------------------------------
    def mark_read(self, event: InboundEvent, *, typing_indicator: bool = False) -> ReadCommand:
        """Ask the pipeline to mark ``event``'s message read at Meta (and, with ``typing_indicator``,
        show the user that an answer is being typed). Returns the ``ReadCommand`` once Kafka
        acknowledged it; ``wapipe erp inbound`` carries it out with the tenant's token (a refusal
        lands on ``wa.erp.dead`` with its reason)."""
        if event.tenant_id != self.tenant_id:
            raise PermissionError(f"event of tenant {event.tenant_id}, consumer of tenant {self.tenant_id}")
        if event.kind == "STATUS" or not event.subject_id:
            raise ValueError("only a user's message can be marked read")
        wamid = event.message.get("id")
        if not wamid:
            raise ValueError("the message's content is not open (restricted, erased or unreadable): no wamid")
        cmd = ReadCommand(
            command_id=str(uuid.uuid4()), tenant_id=self.tenant_id, phone_number_id=event.phone_number_id,
            subject_id=event.subject_id, message_ref=event.message_ref,
            pii=Sealed.from_avro(self.keys.seal(self.tenant_id, event.subject_id, {"wamid": wamid})),
            typing_indicator=typing_indicator, requested_at=dt.datetime.now(dt.timezone.utc))
        self._publish(cmd)
        return cmd

    def _publish(self, cmd: ReadCommand) -> None:
        with self._lock:
            if self._producer is None:
                self._producer = make_producer(self._bootstrap, partitioner=JAVA_PARTITIONER)
            errors: list[str] = []
            self._producer.produce(T.ERP_READS, key=self.tenant_id.encode(),
                                   value=self.serde.encode("ReadCommand", cmd.to_avro(), topic=T.ERP_READS),
                                   on_delivery=lambda err, _m: errors.append(err.str()) if err else None)
            if self._producer.flush(self.timeout):
                raise PublishError(f"read command not acknowledged within {self.timeout:.0f}s")
            if errors:
                raise PublishError(f"read command failed: {errors[0]}")

    def close(self) -> None:
        self._c.close()
        if self._producer is not None:
            self._producer.flush(self.timeout)
        ring = getattr(self, "_ring", None)
        if ring is not None:
            ring.close()

    def __enter__(self) -> "ErpConsumer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
