"""Audit events of the tenant lifecycle on ``wa.audit`` (AuditEvent records, keyed by tenant_id).

Details are short strings: ids, step names, counts, error messages — never a token or a secret.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from wapipe.avro import AvroSerde
from wapipe.tenants.models import utcnow
from wapipe.tenants.store import _produce
from wapipe.topics import AUDIT


def audit_record(*, actor: str, action: str, tenant_id: str | None, target: str | None = None,
                 outcome: str = "ok", details: dict[str, object] | None = None) -> dict:
    return {
        "event_id": uuid.uuid4().hex, "occurred_at": utcnow(), "actor": actor, "tenant_id": tenant_id,
        "subject_id": None, "action": action, "target": target, "outcome": outcome,
        "details": {k: str(v) for k, v in (details or {}).items() if v is not None},
    }


def publish_audit(producer: Producer, *, actor: str, action: str, tenant_id: str | None, target: str | None = None,
                  outcome: str = "ok", details: dict[str, object] | None = None,
                  serde: AvroSerde | None = None) -> dict:
    rec = audit_record(actor=actor, action=action, tenant_id=tenant_id, target=target, outcome=outcome,
                       details=details)
    serde = serde or AvroSerde()
    _produce(producer, AUDIT, tenant_id or "-", serde.encode("AuditEvent", rec, topic=AUDIT), 30.0)
    return rec
