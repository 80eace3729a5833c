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


def read_audit(bootstrap: str, tenant_id: str, *, serde: AvroSerde | None = None, timeout: float = 30.0) -> list[dict]:
    """Every AuditEvent of ``tenant_id`` on ``wa.audit`` (keyed by tenant_id), oldest first; a record
    that does not decode is passed; TimeoutError when the topic is not read to its end in time."""
    from wapipe.edge.scan import scan

    serde = serde or AvroSerde()
    key = tenant_id.encode()
    out: list[dict] = []
    for m in scan(bootstrap, AUDIT, timeout=timeout, missing_ok=True):
        if m.key() == key:
            try:
                out.append(serde.decode(m.value(), "AuditEvent"))
            except ValueError:
                continue
    return sorted(out, key=lambda e: e["occurred_at"])
