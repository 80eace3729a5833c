"""Submitting and reading privacy requests: what the CLI and the admin API share.

A person is named by their number or their business-scoped user id (BSUID): ``wa_id`` takes
either (``subjects.subject_id``). A person seen with both has two subjects, linked on
``wa.subject.links`` (``links.py``): an erasure, restriction or unrestriction of one is also
made for every linked subject (their own requests, ``details.linked_to`` naming the first; the
first lists them in ``details.linked_requests``), an erasure tombstones the links, and an
export covers all of them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.edge.clients import producer as make_producer
from wapipe.messages.privacy import PrivacyRequest, PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.privacy.errors import PrivacyError, UnknownSubject
from wapipe.privacy.export import export_subject, merge_exports
from wapipe.privacy.kek import Kek, load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.links import linked_subjects, read_link_partitions
from wapipe.privacy.records import SUBJECT_CHECKED, Publisher, audit_event, new_request, now_ms
from wapipe.privacy.registry import PrivacyRegistry, sealed_to_detail
from wapipe.privacy.subjects import pepper_from, subject_id
from wapipe.topics import SUBJECT_LINKS

# Requests made for every subject linked to the one named (``PrivacyService.submit``).
_FANNED_OUT = frozenset({"ERASURE", "RESTRICTION", "UNRESTRICTION"})


class PrivacyService:
    def __init__(self, settings: Settings, bootstrap: str, *, kek: Kek | None = None) -> None:
        self.s = settings
        self.bootstrap = bootstrap
        self.serde = AvroSerde.from_settings(settings)
        self.kek = kek or load_kek(settings)
        self.pepper = pepper_from(settings)
        self.registry = PrivacyRegistry(settings, bootstrap, serde=self.serde)
        self._keyring: KeyRing | None = None
        self._producer = make_producer(bootstrap)
        self.pub = Publisher(self._producer, self.serde)

    def start(self) -> "PrivacyService":
        self.registry.start()
        self.registry.wait_ready(60)
        return self

    @property
    def keyring(self) -> KeyRing:
        if self._keyring is None:
            self._keyring = KeyRing(self.s, self.bootstrap, self.kek, serde=self.serde).start()
            self._keyring.wait_ready(60)
        return self._keyring

    def close(self) -> None:
        self.registry.close()
        if self._keyring is not None:
            self._keyring.close()
        self._producer.flush(10)

    def subject(self, tenant_id: str, wa_id: str | None = None, subject: str | None = None) -> str:
        """The tenant's subject for a number, or a subject id the tenant owns.

        A number gives the tenant's own pseudonym (per tenant by construction: subjects.py). A subject
        id is accepted only when its data keys were created for this tenant (``KeyRing.tenants_of``)
        or one of the tenant's checked requests named it (``PrivacyRegistry.tenants_of``); anything else — another tenant's subject, an id nobody holds, a number and an id that do not
        match — raises ``UnknownSubject``, the same for all, so the answer reveals nothing."""
        if not tenant_id:
            raise ValueError("a subject belongs to a tenant: give the tenant")
        if wa_id:
            sid = subject_id(self.pepper, tenant_id, wa_id)
            if subject and subject != sid:
                raise UnknownSubject(tenant_id)
            return sid
        if not subject:
            raise ValueError("give the WhatsApp number (wa_id) or the subject id")
        if tenant_id not in self.registry.tenants_of(subject) and tenant_id not in self.keyring.tenants_of(subject):
            raise UnknownSubject(tenant_id)
        return subject

    def submit(self, kind: str, *, tenant_id: str, wa_id: str | None = None, subject: str | None = None,
               source: str = "cli", actor: str = "operator:cli",
               details: dict[str, str] | None = None) -> PrivacyRequest:
        sid = self.subject(tenant_id, wa_id, subject)
        checked = "number" if wa_id else "owned"
        linked = sorted(self.linked(tenant_id, sid) - {sid}) if kind in _FANNED_OUT else []
        others = [self._record(kind, tenant_id, other, source=source, actor=actor, checked="linked",
                               details={**(details or {}), "linked_to": sid}) for other in linked]
        if others:
            details = {**(details or {}), "linked_requests": ",".join(r.request_id for r in others)}
        rec = self._record(kind, tenant_id, sid, source=source, actor=actor, details=details, checked=checked)
        if kind == "ERASURE":
            self._unlink(tenant_id, {sid, *linked})
        return rec

    def linked(self, tenant_id: str, sid: str) -> set[str]:
        """``sid`` and the tenant's subjects linked to it (the same person by number and BSUID)."""
        return linked_subjects(self.bootstrap, self.serde, tenant_id, sid)

    def _unlink(self, tenant_id: str, subjects: set[str]) -> None:
        """Tombstone the tenant's links between ``subjects`` (in the partitions that hold them)."""
        for key, partitions in read_link_partitions(self.bootstrap, self.serde, tenant_id, subjects).items():
            for partition in partitions:
                self._producer.produce(SUBJECT_LINKS, key=key, value=None, partition=partition)
        if self._producer.flush(30):
            raise PrivacyError(f"{SUBJECT_LINKS}: link tombstones not acknowledged within 30s")

    def _record(self, kind: str, tenant_id: str, sid: str, *, source: str, actor: str, checked: str,
                details: dict[str, str] | None = None) -> PrivacyRequest:
        """Publish a request about ``sid``, a subject already resolved for the tenant (``subject``)."""
        rec = new_request(kind, source=source, tenant_id=tenant_id, subject_id=sid,
                          details={**(details or {}), SUBJECT_CHECKED: checked})
        self.pub.request(rec)
        self.registry.remember(rec)
        self.pub.audit(audit_event(f"privacy.{kind.lower()}.requested", actor=actor, tenant_id=tenant_id, subject_id=None,
                                   target=rec.request_id,
                                   details={"source": source, "confirmation_code": rec.confirmation_code}))
        return rec

    def correct(self, *, tenant_id: str, field: str, value: str, wa_id: str | None = None, subject: str | None = None,
                source: str = "cli", actor: str = "operator:cli") -> PrivacyRequest:
        sid = self.subject(tenant_id, wa_id, subject)
        sealed = self.keyring.seal(tenant_id, sid, {"value": value})  # personal data: sealed, never in clear
        return self._record("CORRECTION", tenant_id, sid, source=source, actor=actor,
                            checked="number" if wa_id else "owned",
                            details={"field": field, "sealed": sealed_to_detail(sealed)})

    def status(self, code_or_id: str, *, tenant_id: str | None) -> PrivacyRequest | None:
        """The request with this confirmation code (or request id) if it is ``tenant_id``'s; ``None``
        otherwise, as for an unknown code. ``tenant_id=None`` finds only requests without a tenant
        (Meta's data-deletion callback)."""
        rec = self.registry.by_code(code_or_id) or self.registry.get(code_or_id)
        if rec is None or (rec.tenant_id or None) != (tenant_id or None):
            return None
        return rec

    def export(self, *, tenant_id: str, owns_number: Callable[[str], bool], wa_id: str | None = None,
               subject: str | None = None, reader_factory: Callable[[], Any] | None = None, source: str = "cli",
               actor: str = "operator:cli") -> dict:
        """An ACCESS request, served at once: everything the tenant holds about its subject
        (export.export_subject), recorded as COMPLETED with an audit event. ``UnknownSubject`` for a
        subject that is not the tenant's, before anything is read or recorded. ``reader_factory()``
        opens the ClickHouse reader (None: Kafka only); it is closed after the export."""
        sid = self.subject(tenant_id, wa_id, subject)
        rec = self._record("ACCESS", tenant_id, sid, source=source, actor=actor, checked="number" if wa_id else "owned")
        reader = reader_factory() if reader_factory is not None else None
        try:
            linked = sorted(self.linked(tenant_id, sid) - {sid})
            docs = [export_subject(bootstrap=self.bootstrap, serde=self.serde, keyring=self.keyring,
                                   registry=self.registry, tenant_id=tenant_id, subject_id=one,
                                   subject_of=lambda wa: subject_id(self.pepper, tenant_id, wa),
                                   owns_number=owns_number, reader=reader) for one in (sid, *linked)]
        finally:
            if reader is not None:
                reader.close()
        doc = merge_exports(docs)
        self.pub.request(replace(rec, status=PrivacyStatus.COMPLETED, steps={"export": "done"},
                                 updated_at=at_ms(now_ms())))
        self.pub.audit(audit_event("privacy.access.completed", actor=actor, tenant_id=tenant_id, subject_id=None,
                                   target=rec.request_id,
                                   details={"kafka_records": str(sum(len(v) for v in doc["kafka"].values())),
                                            "clickhouse_rows": str(sum(len(v) for v in doc["clickhouse"].values()))}))
        doc["request"] = {"request_id": rec.request_id, "confirmation_code": rec.confirmation_code}
        return doc

    def wait(self, request_id: str, timeout: float) -> PrivacyRequest | None:
        deadline = time.monotonic() + timeout
        while True:
            rec = self.registry.get(request_id)
            if (rec and rec.final) or time.monotonic() > deadline:
                return rec
            time.sleep(0.2)
