"""The ERP family: ``ReadCommand`` (v1) on ``wa.erp.reads``, the ERP's request to mark a user's
message read, and ``ErpInbound`` (v1) on ``wa.erp.inbound``, what the ERP receives.

Personal data travels only inside ``pii`` (a ``Sealed``, shared with the send family).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from wapipe.messages.events import MetaError
from wapipe.messages.send import Sealed


@dataclass(slots=True, kw_only=True)
class ReadCommand:
    """ReadCommand.v1.avsc (key: tenant_id). ``pii`` seals ``{"wamid": ...}`` under the subject's
    key; ``message_ref`` is the keyed ref of that wamid (checked against it before any call)."""

    command_id: str
    tenant_id: str
    phone_number_id: str
    subject_id: str
    message_ref: str
    pii: Sealed
    requested_at: dt.datetime
    typing_indicator: bool = False

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> ReadCommand:
        return cls(command_id=r["command_id"], tenant_id=r["tenant_id"], phone_number_id=r["phone_number_id"],
                   subject_id=r["subject_id"], message_ref=r["message_ref"], pii=Sealed.from_avro(r["pii"]),
                   requested_at=r["requested_at"], typing_indicator=bool(r.get("typing_indicator")))

    def to_avro(self) -> dict[str, Any]:
        return {"command_id": self.command_id, "tenant_id": self.tenant_id, "phone_number_id": self.phone_number_id,
                "subject_id": self.subject_id, "message_ref": self.message_ref, "pii": self.pii.to_avro(),
                "typing_indicator": self.typing_indicator, "requested_at": self.requested_at}


class ErpInboundKind(StrEnum):
    MESSAGE = "MESSAGE"
    BUTTON_REPLY = "BUTTON_REPLY"
    LIST_REPLY = "LIST_REPLY"
    REACTION = "REACTION"
    FAILED = "FAILED"
    STATUS = "STATUS"


@dataclass(slots=True, kw_only=True)
class CommandLink:
    """The SendCommand an ErpInbound event answers or reports on. ``command_id`` is None when only
    Meta's echo of ``biz_opaque_callback_data`` named the command."""

    idempotency_key: str
    message_ref: str
    command_id: str | None = None
    campaign_id: str | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> CommandLink:
        return cls(idempotency_key=r["idempotency_key"], message_ref=r["message_ref"],
                   command_id=r.get("command_id"), campaign_id=r.get("campaign_id"))

    def to_avro(self) -> dict[str, Any]:
        return {"idempotency_key": self.idempotency_key, "command_id": self.command_id,
                "campaign_id": self.campaign_id, "message_ref": self.message_ref}


@dataclass(slots=True, kw_only=True)
class ErpInbound:
    """ErpInbound.v1.avsc (key: tenant_id): a user's message to one of the tenant's numbers, or a
    status of a message one of its SendCommands sent. ``extra`` is JSON text as written."""

    event_id: str
    tenant_id: str
    kind: ErpInboundKind
    phone_number_id: str
    waba_id: str
    message_ref: str
    timestamp: dt.datetime
    received_at: dt.datetime
    subject_id: str | None = None
    message_type: str | None = None
    status: str | None = None
    command: CommandLink | None = None
    errors: list[MetaError] = field(default_factory=list)
    pii: Sealed | None = None
    extra: str = "{}"

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> ErpInbound:
        cmd, pii = r.get("command"), r.get("pii")
        return cls(event_id=r["event_id"], tenant_id=r["tenant_id"], kind=ErpInboundKind(r["kind"]),
                   phone_number_id=r["phone_number_id"], waba_id=r["waba_id"], message_ref=r["message_ref"],
                   timestamp=r["timestamp"], received_at=r["received_at"], subject_id=r.get("subject_id"),
                   message_type=r.get("message_type"), status=r.get("status"),
                   command=None if cmd is None else CommandLink.from_avro(cmd),
                   errors=[MetaError.from_avro(e) for e in r.get("errors") or ()],
                   pii=None if pii is None else Sealed.from_avro(pii), extra=r.get("extra", "{}"))

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "kind": str(self.kind),
                "phone_number_id": self.phone_number_id, "waba_id": self.waba_id, "subject_id": self.subject_id,
                "message_ref": self.message_ref, "message_type": self.message_type, "status": self.status,
                "command": None if self.command is None else self.command.to_avro(),
                "errors": [e.to_avro() for e in self.errors], "timestamp": self.timestamp,
                "received_at": self.received_at, "pii": None if self.pii is None else self.pii.to_avro(),
                "extra": self.extra}
