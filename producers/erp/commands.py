"""Typed SendCommands: what the ERP asks for, checked, with the personal part sealed.

``build_command`` turns an outbound message (``connectors.meta.messages``: template, text,
media, interactive …) plus the routing fields into the Avro ``SendCommand`` dict. The recipient and
the message object are sealed with the recipient's data key (``KeyRing.seal``) into ``pii``:
nothing personal is readable on the topic, and erasing the subject's key erases the command.

A recipient is a phone number (the message's ``to``), a business-scoped user id (its
``recipient``: a username user whose number Meta withholds), or both (Meta then uses the number).
``subject_id`` is the number's subject when there is one, else the BSUID's; ``user_subject_id``
(SendCommand v3) the BSUID's, so the worker finds the person's service window and restriction
under either, and the producer links the two subjects (``wapipe/privacy/links.py``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connectors.meta.messages import BodyComponent, OutboundMessage, TemplateMessage, TextMessage, TextParameter
from wapipe.privacy.subjects import subject_id as make_subject_id

_KINDS = {"template": "TEMPLATE", "text": "TEXT", "image": "IMAGE", "document": "DOCUMENT", "video": "VIDEO",
          "audio": "AUDIO", "interactive": "INTERACTIVE"}
# Fields of the Graph request the pipeline sets itself.
_ENVELOPE = ("messaging_product", "recipient_type", "to", "recipient", "biz_opaque_callback_data")


class Lane(StrEnum):
    TRANSACTIONAL = "TRANSACTIONAL"  # invoices, OTPs: never wait behind a campaign
    CAMPAIGN = "CAMPAIGN"  # bulk: paced fairly, pausable, stoppable


class Sealer(Protocol):
    def seal(self, tenant_id: str, subject_id: str, data: dict) -> dict: ...


class Routing(BaseModel):
    """Everything about a command except the message itself."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str = Field(min_length=1)
    phone_number_id: str = Field(min_length=1, pattern=r"^\d+$")
    idempotency_key: str = Field(min_length=1, max_length=200,
                                 description="the same key is dispatched at most once (e.g. the ERP document id)")
    lane: Lane = Lane.TRANSACTIONAL
    campaign_id: str | None = Field(default=None, min_length=1, max_length=200)
    valid_until: dt.datetime | None = None
    priority: int = 0
    metadata: dict[str, str] = Field(default_factory=dict, description="ERP references; no personal data")

    @field_validator("valid_until")
    @classmethod
    def _aware(cls, v: dt.datetime | None) -> dt.datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("valid_until must be timezone-aware")
        return v

    def model_post_init(self, _ctx: Any) -> None:
        if self.lane == Lane.CAMPAIGN and not self.campaign_id:
            raise ValueError("a CAMPAIGN command needs a campaign_id")


def body_parameter_count(message: OutboundMessage) -> int:
    if isinstance(message, TemplateMessage):
        for c in message.components:
            if isinstance(c, BodyComponent):
                return len(c.parameters)
    return 0


def build_command(message: OutboundMessage, routing: Routing, *, sealer: Sealer, pepper: bytes,
                  command_id: str | None = None, requested_at: dt.datetime | None = None) -> dict[str, Any]:
    """The Avro ``SendCommand`` dict for ``message`` (its ``to`` and/or ``recipient`` is the recipient)."""
    request = message.to_request()
    to, bsuid = request.get("to"), request.get("recipient")
    graph_message = {k: v for k, v in request.items() if k not in _ENVELOPE}
    user_subject = make_subject_id(pepper, routing.tenant_id, bsuid) if bsuid else None
    subject = make_subject_id(pepper, routing.tenant_id, to) if to else user_subject
    recipient: dict[str, Any] = {"to": to} if to else {}
    if bsuid:
        recipient["recipient"] = bsuid
    template = None
    if isinstance(message, TemplateMessage):
        template = {"name": message.name, "language": message.language,
                    "parameter_count": body_parameter_count(message)}
    return {
        "command_id": command_id or str(uuid.uuid4()),
        "tenant_id": routing.tenant_id,
        "idempotency_key": routing.idempotency_key,
        "phone_number_id": routing.phone_number_id,
        "subject_id": subject,
        "user_subject_id": user_subject,
        "lane": str(routing.lane),
        "campaign_id": routing.campaign_id,
        "kind": _KINDS.get(message.type, "OTHER"),
        "template": template,
        "pii": sealer.seal(routing.tenant_id, subject, {**recipient, "message": graph_message}),
        "requested_at": requested_at or dt.datetime.now(dt.timezone.utc),
        "valid_until": routing.valid_until,
        "priority": routing.priority,
        "metadata": dict(routing.metadata),
    }


def template(to: str | None, name: str, language: str = "en_US", body: list[str] | None = None, *,
             recipient: str | None = None) -> TemplateMessage:
    """A template message with positional text body parameters (the common ERP case). ``to`` a
    phone number, ``recipient`` a BSUID: either or both."""
    components = [BodyComponent(parameters=[TextParameter(text=p) for p in body])] if body else []
    return TemplateMessage(to=to, recipient=recipient, name=name, language=language, components=components)


def text(to: str | None, body: str, *, recipient: str | None = None) -> TextMessage:
    """A session (free-form) text message: only inside the recipient's 24 h window."""
    return TextMessage(to=to, recipient=recipient, body=body)
