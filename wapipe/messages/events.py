"""The normalised events family: what the normaliser writes from Meta's webhooks and the send
worker, the ERP-bound processor, the privacy tools and the sink read.

* ``StatusEvent`` (v4; reads v3) on ``wa.status.events``;
* ``InboundMessage`` (v2) on ``wa.inbound.messages``;
* ``AccountEvent`` (v2; reads v1) on ``wa.account.events``;
* ``Suppression`` (v1) on ``wa.suppressions``;
* ``SubjectLink`` (v1) on ``wa.subject.links``.

Each class names its Avro record in ``RECORD``. Personal data travels only inside ``pii``
(a ``Sealed``, shared with the send family); ``extra`` and ``value`` are JSON text as written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wapipe.messages.send import Sealed


def _sealed(r: dict[str, Any] | None) -> Sealed | None:
    return None if r is None else Sealed.from_avro(r)


def _avro(s: Sealed | None) -> dict[str, Any] | None:
    return None if s is None else s.to_avro()


@dataclass(slots=True)
class MetaError:
    """One of Meta's ``errors`` on a status (StatusEvent's ``MetaError``)."""

    code: int
    title: str | None = None
    message: str | None = None
    details: str | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> MetaError:
        return cls(r["code"], r.get("title"), r.get("message"), r.get("details"))

    def to_avro(self) -> dict[str, Any]:
        return {"code": self.code, "title": self.title, "message": self.message, "details": self.details}


@dataclass(slots=True, kw_only=True)
class StatusEvent:
    """One message status from a webhook (StatusEvent.v4.avsc). ``wamid`` is the wamid's keyed ref;
    ``recipient_type`` is null in v3 records; a group's status has no ``subject_id``."""

    RECORD: ClassVar[str] = "StatusEvent"

    event_id: str
    waba_id: str
    phone_number_id: str
    wamid: str
    status: str
    timestamp: dt.datetime
    received_at: dt.datetime
    tenant_id: str | None = None
    subject_id: str | None = None
    pii: Sealed | None = None
    biz_opaque_callback_data: str | None = None
    conversation_id: str | None = None
    conversation_origin: str | None = None
    conversation_expires_at: dt.datetime | None = None
    pricing_billable: bool | None = None
    pricing_model: str | None = None
    pricing_category: str | None = None
    pricing_type: str | None = None
    errors: list[MetaError] = field(default_factory=list)
    extra: str = "{}"
    recipient_type: str | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> StatusEvent:
        return cls(event_id=r["event_id"], tenant_id=r.get("tenant_id"), waba_id=r["waba_id"],
                   phone_number_id=r["phone_number_id"], wamid=r["wamid"], status=r["status"],
                   timestamp=r["timestamp"], subject_id=r.get("subject_id"), pii=_sealed(r.get("pii")),
                   biz_opaque_callback_data=r.get("biz_opaque_callback_data"),
                   conversation_id=r.get("conversation_id"), conversation_origin=r.get("conversation_origin"),
                   conversation_expires_at=r.get("conversation_expires_at"),
                   pricing_billable=r.get("pricing_billable"), pricing_model=r.get("pricing_model"),
                   pricing_category=r.get("pricing_category"), pricing_type=r.get("pricing_type"),
                   errors=[MetaError.from_avro(e) for e in r.get("errors") or ()], received_at=r["received_at"],
                   extra=r.get("extra", "{}"), recipient_type=r.get("recipient_type"))

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "waba_id": self.waba_id,
                "phone_number_id": self.phone_number_id, "wamid": self.wamid, "status": self.status,
                "timestamp": self.timestamp, "subject_id": self.subject_id, "pii": _avro(self.pii),
                "biz_opaque_callback_data": self.biz_opaque_callback_data, "conversation_id": self.conversation_id,
                "conversation_origin": self.conversation_origin,
                "conversation_expires_at": self.conversation_expires_at, "pricing_billable": self.pricing_billable,
                "pricing_model": self.pricing_model, "pricing_category": self.pricing_category,
                "pricing_type": self.pricing_type, "errors": [e.to_avro() for e in self.errors],
                "received_at": self.received_at, "extra": self.extra, "recipient_type": self.recipient_type}


@dataclass(slots=True, kw_only=True)
class InboundMessage:
    """A message a WhatsApp user sent to a business number (InboundMessage.v2.avsc). ``message_id``
    and ``context_message_id`` are wamid refs; ``pii`` null: content not stored (restricted)."""

    RECORD: ClassVar[str] = "InboundMessage"

    event_id: str
    waba_id: str
    phone_number_id: str
    message_id: str
    type: str
    timestamp: dt.datetime
    subject_id: str
    received_at: dt.datetime
    tenant_id: str | None = None
    pii: Sealed | None = None
    context_message_id: str | None = None
    extra: str = "{}"

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> InboundMessage:
        return cls(event_id=r["event_id"], tenant_id=r.get("tenant_id"), waba_id=r["waba_id"],
                   phone_number_id=r["phone_number_id"], message_id=r["message_id"], type=r["type"],
                   timestamp=r["timestamp"], subject_id=r["subject_id"], pii=_sealed(r.get("pii")),
                   context_message_id=r.get("context_message_id"), received_at=r["received_at"],
                   extra=r.get("extra", "{}"))

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "waba_id": self.waba_id,
                "phone_number_id": self.phone_number_id, "message_id": self.message_id, "type": self.type,
                "timestamp": self.timestamp, "subject_id": self.subject_id, "pii": _avro(self.pii),
                "context_message_id": self.context_message_id, "received_at": self.received_at, "extra": self.extra}


@dataclass(slots=True, kw_only=True)
class AccountEvent:
    """Any other webhook change (AccountEvent.v2.avsc; v1 records have no ``subject_id``/``pii``).
    ``value`` is the change as JSON, redacted when the change is about a person (``subject_id``)."""

    RECORD: ClassVar[str] = "AccountEvent"

    event_id: str
    waba_id: str
    field: str
    value: str
    received_at: dt.datetime
    tenant_id: str | None = None
    phone_number_id: str | None = None
    event: str | None = None
    timestamp: dt.datetime | None = None
    subject_id: str | None = None
    pii: Sealed | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> AccountEvent:
        return cls(event_id=r["event_id"], tenant_id=r.get("tenant_id"), waba_id=r["waba_id"],
                   phone_number_id=r.get("phone_number_id"), field=r["field"], event=r.get("event"),
                   value=r["value"], timestamp=r.get("timestamp"), received_at=r["received_at"],
                   subject_id=r.get("subject_id"), pii=_sealed(r.get("pii")))

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "waba_id": self.waba_id,
                "phone_number_id": self.phone_number_id, "field": self.field, "event": self.event,
                "value": self.value, "timestamp": self.timestamp, "received_at": self.received_at,
                "subject_id": self.subject_id, "pii": _avro(self.pii)}


MARKETING_MESSAGES = "marketing_messages"


@dataclass(slots=True, kw_only=True)
class Suppression:
    """A user's marketing preference towards one tenant (Suppression.v1.avsc, compacted by
    ``tenant_id/subject_id``); the entry with the latest ``at`` wins."""

    RECORD: ClassVar[str] = "Suppression"

    event_id: str
    tenant_id: str
    subject_id: str
    suppressed: bool
    source: str
    at: dt.datetime
    received_at: dt.datetime
    category: str = MARKETING_MESSAGES
    phone_number_id: str | None = None

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> Suppression:
        return cls(event_id=r["event_id"], tenant_id=r["tenant_id"], subject_id=r["subject_id"],
                   category=r.get("category", MARKETING_MESSAGES), suppressed=r["suppressed"], source=r["source"],
                   at=r["at"], phone_number_id=r.get("phone_number_id"), received_at=r["received_at"])

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "subject_id": self.subject_id,
                "category": self.category, "suppressed": self.suppressed, "source": self.source, "at": self.at,
                "phone_number_id": self.phone_number_id, "received_at": self.received_at}

    @property
    def key(self) -> str:
        """The record key: ``tenant_id/subject_id``."""
        return f"{self.tenant_id}/{self.subject_id}"


@dataclass(slots=True, kw_only=True)
class SubjectLink:
    """Two subjects of one tenant are one person (SubjectLink.v1.avsc, compacted by
    ``tenant_id/linked_subject_id``)."""

    RECORD: ClassVar[str] = "SubjectLink"

    event_id: str
    tenant_id: str
    subject_id: str
    linked_subject_id: str
    linked_at: dt.datetime

    @classmethod
    def from_avro(cls, r: dict[str, Any]) -> SubjectLink:
        return cls(event_id=r["event_id"], tenant_id=r["tenant_id"], subject_id=r["subject_id"],
                   linked_subject_id=r["linked_subject_id"], linked_at=r["linked_at"])

    def to_avro(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "tenant_id": self.tenant_id, "subject_id": self.subject_id,
                "linked_subject_id": self.linked_subject_id, "linked_at": self.linked_at}

    @property
    def key(self) -> str:
        """The record key: ``tenant_id/linked_subject_id``."""
        return f"{self.tenant_id}/{self.linked_subject_id}"
