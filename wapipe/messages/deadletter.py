"""The dead-letter family: ``DeadLetterRecord`` (DeadLetter v1), a record set aside with why.

(``wapipe.deadletter.DeadLetter`` is the writer's request before cutting and encoding; this is
the record on the topic.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, kw_only=True)
class DeadLetterRecord:
    source_topic: str
    reason: str
    error_type: str
    failed_at: dt.datetime
    partition: int = -1
    offset: int = -1
    key: bytes | None = None
    value: bytes | None = None
    tenant_id: str | None = None
    subject_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> DeadLetterRecord:
        return cls(source_topic=r["source_topic"], reason=r["reason"], error_type=r["error_type"],
                   failed_at=r["failed_at"], partition=r.get("partition", -1), offset=r.get("offset", -1),
                   key=r.get("key"), value=r.get("value"), tenant_id=r.get("tenant_id"),
                   subject_id=r.get("subject_id"), headers=r.get("headers") or {})

    def to_avro(self) -> dict[str, Any]:
        return {"source_topic": self.source_topic, "partition": self.partition, "offset": self.offset,
                "key": self.key, "value": self.value, "reason": self.reason, "error_type": self.error_type,
                "tenant_id": self.tenant_id, "subject_id": self.subject_id, "headers": self.headers,
                "failed_at": self.failed_at}
