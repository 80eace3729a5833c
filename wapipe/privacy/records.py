"""PrivacyRequest and AuditEvent records, and publishing them with acks."""

from __future__ import annotations

import secrets
import threading
import time
import uuid

from confluent_kafka import Producer

from wapipe.avro import AvroSerde
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.privacy.errors import PrivacyError
from wapipe.topics import AUDIT, PRIVACY_REQUESTS

KINDS = tuple(PrivacyKind)
# The audit action the ClickHouse erasure (sinks/erasure.py) writes when a request's rows are gone.
CLICKHOUSE_DONE = "privacy.erasure.clickhouse_deleted"
# The detail a request carries when its subject was checked to be its tenant's when it was made
# (PrivacyService.subject: "number" = derived from the person's number in this tenant, "owned" =
# a subject id the tenant holds). Only such requests prove that a tenant owns a subject id.
SUBJECT_CHECKED = "subject_checked"


def now_ms() -> int:
    return int(time.time() * 1000)


def confirmation_code() -> str:
    """128 random bits: unique without coordination (the ingress uses its own, also random)."""
    return secrets.token_hex(16).upper()


def new_request(kind: str, *, source: str, tenant_id: str | None = None, subject_id: str | None = None,
                meta_user_id: str | None = None, details: dict[str, str] | None = None) -> PrivacyRequest:
    if kind not in KINDS:
        raise ValueError(f"unknown request kind {kind!r} (one of {', '.join(KINDS)})")
    now = at_ms(now_ms())
    return PrivacyRequest(request_id=uuid.uuid4().hex, kind=PrivacyKind(kind), tenant_id=tenant_id,
                          subject_id=subject_id, meta_user_id=meta_user_id, source=source,
                          status=PrivacyStatus.RECEIVED, confirmation_code=confirmation_code(), requested_at=now,
                          updated_at=now, details=dict(details or {}))


def audit_event(action: str, *, actor: str, tenant_id: str | None = None, subject_id: str | None = None,
                target: str | None = None, outcome: str = "ok", details: dict[str, str] | None = None) -> dict:
    return {
        "event_id": uuid.uuid4().hex, "occurred_at": now_ms(), "actor": actor, "tenant_id": tenant_id,
        "subject_id": subject_id, "action": action, "target": target, "outcome": outcome,
        "details": {k: str(v) for k, v in (details or {}).items()},
    }


class Publisher:
    """Produce records and wait for acks (acks=all, idempotent producer from wapipe.edge.clients)."""

    def __init__(self, producer: Producer, serde: AvroSerde) -> None:
        self.producer = producer
        self.serde = serde
        self._lock = threading.Lock()

    def send(self, topic: str, key: bytes | None, value: bytes | None, *, timeout: float = 30.0) -> None:
        errors: list = []
        pending = [1]

        def done(err, _msg) -> None:
            pending[0] -= 1
            if err is not None:
                errors.append(err)

        self.producer.produce(topic, key=key, value=value, on_delivery=done)
        deadline = time.monotonic() + timeout
        while pending[0] and time.monotonic() < deadline:
            self.producer.poll(0.05)
        if pending[0]:
            raise PrivacyError(f"{topic}: no acknowledgement within {timeout}s")
        if errors:
            raise PrivacyError(f"{topic}: {errors[0]}")

    def request(self, record: PrivacyRequest) -> None:
        self.send(PRIVACY_REQUESTS, record.request_id.encode(),
                  self.serde.encode("PrivacyRequest", record.to_avro(), topic=PRIVACY_REQUESTS))

    def audit(self, event: dict) -> None:
        key = (event.get("tenant_id") or "").encode() or None
        self.send(AUDIT, key, self.serde.encode("AuditEvent", event, topic=AUDIT))
