"""The privacy family: ``PrivacyRequest`` (v1), a data-subject request and its progress
(``wa.privacy.requests``, compacted by request id; the latest record of a request is its state).

``kind`` and ``status`` are ``StrEnum``s (equal to their symbol strings); ``details`` and
``steps`` are string maps (``steps``: step -> "requested", "waiting", "done"). Timestamps are
aware ``datetime``s as fastavro returns them; ``requested_ms`` / ``updated_ms`` give epoch
milliseconds, exactly (integer arithmetic, no float rounding).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wapipe.messages.times import to_ms



class PrivacyKind(StrEnum):
    ERASURE = "ERASURE"
    ACCESS = "ACCESS"
    CORRECTION = "CORRECTION"
    RESTRICTION = "RESTRICTION"
    UNRESTRICTION = "UNRESTRICTION"
    DISCONNECT = "DISCONNECT"


class PrivacyStatus(StrEnum):
    RECEIVED = "RECEIVED"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    REJECTED = "REJECTED"


# A request in one of these is done: nothing moves it on.
FINAL = frozenset({PrivacyStatus.COMPLETED, PrivacyStatus.FAILED, PrivacyStatus.REJECTED})


@dataclass(slots=True, kw_only=True)
class PrivacyRequest:
    """PrivacyRequest.v1.avsc. ``source``: cli, api, meta_deletion_callback, meta_deauthorize."""

    request_id: str
    kind: PrivacyKind
    source: str
    status: PrivacyStatus
    confirmation_code: str
    requested_at: dt.datetime
    updated_at: dt.datetime
    tenant_id: str | None = None
    subject_id: str | None = None
    meta_user_id: str | None = None  # app-scoped user id from Meta's callbacks
    details: dict[str, str] = field(default_factory=dict)
    steps: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> PrivacyRequest:
        return cls(request_id=r["request_id"], kind=PrivacyKind(r["kind"]), source=r["source"],
                   status=PrivacyStatus(r["status"]), confirmation_code=r["confirmation_code"],
                   requested_at=r["requested_at"], updated_at=r["updated_at"], tenant_id=r.get("tenant_id"),
                   subject_id=r.get("subject_id"), meta_user_id=r.get("meta_user_id"),
                   details=r.get("details") or {}, steps=r.get("steps") or {})

    def to_avro(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "kind": str(self.kind), "tenant_id": self.tenant_id,
                "subject_id": self.subject_id, "meta_user_id": self.meta_user_id, "source": self.source,
                "status": str(self.status), "confirmation_code": self.confirmation_code,
                "requested_at": self.requested_at, "updated_at": self.updated_at, "details": self.details,
                "steps": self.steps}

    @property
    def requested_ms(self) -> int:
        return to_ms(self.requested_at)

    @property
    def updated_ms(self) -> int:
        return to_ms(self.updated_at)

    @property
    def final(self) -> bool:
        return self.status in FINAL
