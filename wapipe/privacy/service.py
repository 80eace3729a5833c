"""Submitting and reading privacy requests: what the CLI and the admin API share."""

from __future__ import annotations

import time

from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.kafka import producer as make_producer
from wapipe.privacy.kek import Kek, load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.records import FINAL, Publisher, audit_event, new_request
from wapipe.privacy.registry import PrivacyRegistry, sealed_to_detail
from wapipe.privacy.subjects import pepper_from, subject_id


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
        if subject:
            return subject
        if not wa_id:
            raise ValueError("give the WhatsApp number (wa_id) or the subject id")
        return subject_id(self.pepper, tenant_id, wa_id)

    def submit(self, kind: str, *, tenant_id: str, wa_id: str | None = None, subject: str | None = None,
               source: str = "cli", actor: str = "operator:cli", details: dict[str, str] | None = None) -> dict:
        sid = self.subject(tenant_id, wa_id, subject)
        rec = new_request(kind, source=source, tenant_id=tenant_id, subject_id=sid, details=details)
        self.pub.request(rec)
        self.registry.remember(rec)
        self.pub.audit(audit_event(f"privacy.{kind.lower()}.requested", actor=actor, tenant_id=tenant_id, subject_id=None,
                                   target=rec["request_id"], details={"source": source, "confirmation_code": rec["confirmation_code"]}))
        return rec

    def correct(self, *, tenant_id: str, field: str, value: str, wa_id: str | None = None, subject: str | None = None,
                source: str = "cli", actor: str = "operator:cli") -> dict:
        sid = self.subject(tenant_id, wa_id, subject)
        sealed = self.keyring.seal(tenant_id, sid, {"value": value})  # personal data: sealed, never in clear
        return self.submit("CORRECTION", tenant_id=tenant_id, subject=sid, source=source, actor=actor,
                           details={"field": field, "sealed": sealed_to_detail(sealed)})

    def status(self, code_or_id: str) -> dict | None:
        return self.registry.by_code(code_or_id) or self.registry.get(code_or_id)

    def wait(self, request_id: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while True:
            rec = self.registry.get(request_id)
            if (rec and rec["status"] in FINAL) or time.monotonic() > deadline:
                return rec
            time.sleep(0.2)
