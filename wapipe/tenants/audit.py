"""Audit events of the tenant lifecycle on ``wa.audit`` (AuditEvent records, keyed by tenant_id).

Details are short strings: ids, step names, counts, error messages — never a token or a secret.
"""

from __future__ import annotations

import uuid

from confluent_kafka import Producer

from wapipe.avro import AvroSerde
from wapipe.edge.endpoint import confluent_conf
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
    """Every AuditEvent of ``tenant_id`` on ``wa.audit`` (keyed by tenant_id), oldest first."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    serde = serde or AvroSerde()
    c = Consumer({**confluent_conf(bootstrap), "group.id": f"wapipe-audit-reader-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = c.list_topics(AUDIT, timeout=10).topics[AUDIT].partitions
        pending = set()
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(AUDIT, p), timeout=10)
            if high > low:
                pending.add(p)
        c.assign([TopicPartition(AUDIT, p, OFFSET_BEGINNING) for p in pending])
        key = tenant_id.encode()
        out: list[dict] = []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(m.partition())
                continue
            if m.key() == key:
                try:
                    out.append(serde.decode(m.value(), "AuditEvent"))
                except ValueError:
                    continue
        if pending:
            raise TimeoutError(f"wa.audit not read to its end within {timeout:.0f}s")
        return sorted(out, key=lambda e: e["occurred_at"])
    finally:
        c.close()
