"""The send family: ``SendCommand`` (v3; reads v1, v2), ``SendResult`` (v2; reads v1) and the
dispatch ledger's ``DispatchEntry`` (v2; reads v1).

Enum-typed fields hold the symbol strings (``Outcome`` is a ``StrEnum``); timestamps are aware
``datetime``s as fastavro returns them (writing accepts those or epoch milliseconds).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

TRANSACTIONAL = "TRANSACTIONAL"
CAMPAIGN = "CAMPAIGN"


class Outcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    RETRYING = "RETRYING"
    DEAD = "DEAD"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    DUPLICATE = "DUPLICATE"


# Ledger states (DispatchEntry.state).
DISPATCHING = "DISPATCHING"
RETRY = "RETRY"
DONE = "DONE"


@dataclass(slots=True)
class TemplateRef:
    name: str
    language: str
    parameter_count: int = 0

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> TemplateRef:
        return cls(r["name"], r["language"], r.get("parameter_count") or 0)

    def to_avro(self) -> dict[str, Any]:
        return {"name": self.name, "language": self.language, "parameter_count": self.parameter_count}


@dataclass(slots=True)
class Sealed:
    """Personal data sealed with the subject's data key (docs/wire-format.md)."""

    key_id: str
    nonce: bytes
    ciphertext: bytes

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> Sealed:
        return cls(r["key_id"], r["nonce"], r["ciphertext"])

    def to_avro(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "nonce": self.nonce, "ciphertext": self.ciphertext}


@dataclass(slots=True, kw_only=True)
class SendCommand:
    """A request from the ERP to send one WhatsApp message (SendCommand.v3.avsc)."""

    command_id: str
    tenant_id: str
    idempotency_key: str
    phone_number_id: str
    subject_id: str
    pii: Sealed
    requested_at: dt.datetime
    user_subject_id: str | None = None
    lane: str = TRANSACTIONAL
    campaign_id: str | None = None
    kind: str = "OTHER"
    template: TemplateRef | None = None
    valid_until: dt.datetime | None = None
    priority: int = 0
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> SendCommand:
        t = r.get("template")
        return cls(command_id=r["command_id"], tenant_id=r["tenant_id"], idempotency_key=r["idempotency_key"],
                   phone_number_id=r["phone_number_id"], subject_id=r["subject_id"],
                   pii=Sealed.from_avro(r["pii"]), requested_at=r["requested_at"],
                   user_subject_id=r.get("user_subject_id"), lane=r.get("lane") or TRANSACTIONAL,
                   campaign_id=r.get("campaign_id"), kind=r.get("kind") or "OTHER",
                   template=None if t is None else TemplateRef.from_avro(t), valid_until=r.get("valid_until"),
                   priority=r.get("priority") or 0, metadata=r.get("metadata") or {})

    def to_avro(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "tenant_id": self.tenant_id, "idempotency_key": self.idempotency_key,
                "phone_number_id": self.phone_number_id, "subject_id": self.subject_id,
                "user_subject_id": self.user_subject_id, "lane": self.lane, "campaign_id": self.campaign_id,
                "kind": self.kind, "template": None if self.template is None else self.template.to_avro(),
                "pii": self.pii.to_avro(), "requested_at": self.requested_at, "valid_until": self.valid_until,
                "priority": self.priority, "metadata": self.metadata}

    @property
    def key(self) -> str:
        """The dedup key: ``tenant_id/idempotency_key`` (the ledger's record key)."""
        return dedup_key(self.tenant_id, self.idempotency_key)

    @property
    def is_template(self) -> bool:
        return self.kind == "TEMPLATE" or self.template is not None

    @property
    def subjects(self) -> tuple[str, ...]:
        """The recipient's subjects: its number's (or only BSUID's) ``subject_id``, and its BSUID's
        when the command has both (v3 ``user_subject_id``; v1/v2 commands have none)."""
        other = self.user_subject_id
        return (self.subject_id, other) if other and other != self.subject_id else (self.subject_id,)


def dedup_key(tenant_id: str, idempotency_key: str) -> str:
    return f"{tenant_id}/{idempotency_key}"


@dataclass(slots=True, kw_only=True)
class SendResult:
    """What became of one SendCommand (SendResult.v2.avsc); the last result of a command is final."""

    command_id: str
    tenant_id: str
    idempotency_key: str
    phone_number_id: str
    subject_id: str
    outcome: Outcome
    decided_at: dt.datetime
    lane: str = TRANSACTIONAL
    campaign_id: str | None = None
    wamid: str | None = None
    message_status: str | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    reason: str | None = None
    reason_code: str | None = None
    attempts: int = 0
    original_outcome: str | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> SendResult:
        return cls(command_id=r["command_id"], tenant_id=r["tenant_id"], idempotency_key=r["idempotency_key"],
                   phone_number_id=r["phone_number_id"], subject_id=r["subject_id"], outcome=Outcome(r["outcome"]),
                   decided_at=r["decided_at"], lane=r.get("lane") or TRANSACTIONAL, campaign_id=r.get("campaign_id"),
                   wamid=r.get("wamid"), message_status=r.get("message_status"), error_code=r.get("error_code"),
                   error_subcode=r.get("error_subcode"), reason=r.get("reason"), reason_code=r.get("reason_code"),
                   attempts=r.get("attempts") or 0, original_outcome=r.get("original_outcome"))

    def to_avro(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "tenant_id": self.tenant_id, "idempotency_key": self.idempotency_key,
                "phone_number_id": self.phone_number_id, "subject_id": self.subject_id, "lane": self.lane,
                "campaign_id": self.campaign_id, "outcome": str(self.outcome), "wamid": self.wamid,
                "message_status": self.message_status, "error_code": self.error_code,
                "error_subcode": self.error_subcode, "reason": self.reason, "reason_code": self.reason_code,
                "attempts": self.attempts, "original_outcome": self.original_outcome, "decided_at": self.decided_at}


@dataclass(slots=True, kw_only=True)
class DispatchEntry:
    """One ledger record (DispatchEntry.v2.avsc, wa.send.ledger keyed ``tenant_id/idempotency_key``).
    ``state``: DISPATCHING (a Graph call may be under way), RETRY (known not sent, due at
    ``not_before``) or DONE (``outcome`` final)."""

    tenant_id: str
    idempotency_key: str
    command_id: str
    phone_number_id: str
    subject_id: str
    state: str
    at: dt.datetime
    campaign_id: str | None = None
    attempts: int = 0
    outcome: str | None = None
    wamid: str | None = None
    message_status: str | None = None
    error_code: int | None = None
    error_subcode: int | None = None
    template: bool = False
    not_before: dt.datetime | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> DispatchEntry:
        return cls(tenant_id=r["tenant_id"], idempotency_key=r["idempotency_key"], command_id=r["command_id"],
                   phone_number_id=r["phone_number_id"], subject_id=r["subject_id"], state=r["state"], at=r["at"],
                   campaign_id=r.get("campaign_id"), attempts=r.get("attempts") or 0, outcome=r.get("outcome"),
                   wamid=r.get("wamid"), message_status=r.get("message_status"), error_code=r.get("error_code"),
                   error_subcode=r.get("error_subcode"), template=bool(r.get("template")),
                   not_before=r.get("not_before"))

    def to_avro(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "idempotency_key": self.idempotency_key, "command_id": self.command_id,
                "phone_number_id": self.phone_number_id, "subject_id": self.subject_id,
                "campaign_id": self.campaign_id, "state": self.state, "attempts": self.attempts,
                "outcome": self.outcome, "wamid": self.wamid, "message_status": self.message_status,
                "error_code": self.error_code, "error_subcode": self.error_subcode, "template": self.template,
                "not_before": self.not_before, "at": self.at}

    @property
    def key(self) -> str:
        return dedup_key(self.tenant_id, self.idempotency_key)
