"""Models of the webhooks Meta POSTs for a WhatsApp Business Account.

``parse_webhook(raw)`` turns the raw body (already signature-checked) into a ``WebhookEnvelope``::

    {"object": "whatsapp_business_account",
     "entry": [{"id": <WABA id>, "changes": [{"field": …, "value": {…}}]}]}

Meta adds fields and event names often, so every model keeps what it does not know
(``extra="allow"``; read it from ``model_extra``), an unknown ``field`` parses into
``OtherChange`` and an unknown message type into ``OtherMessage`` — never an error. Only the
few fields without which an update means nothing are required (a status's ``id`` and
``status``, a message's ``id``, ``type`` and its sender — ``from`` or ``from_user_id`` — and the
messages value's ``metadata``).

Username users (2026): a user may come with a business-scoped user id (BSUID,
``connectors/meta/bsuid.py``) beside or instead of a phone number: ``contacts[].user_id`` /
``parent_user_id`` / ``profile.username``, ``messages[].from_user_id`` / ``from_parent_user_id``
(and no ``from`` when Meta withholds the number), statuses' ``recipient_user_id`` /
``recipient_parent_user_id``. BSUIDs are checked for their shape and kept exactly as sent; a
malformed one makes its item a ``BadItem``.
Ids are strings even when Meta sends numbers (template ids); timestamps are ints (Meta sends
unix seconds as strings).

Iterate with ``iter_statuses``, ``iter_messages`` (each with its sender's contact),
``iter_errors`` and ``iter_other_changes``.

``parse_items(raw)`` is the per-item reading a consumer uses: every status, message, error and
change is validated on its own, so one malformed item (a ``from`` of the wrong type, a timestamp
``"asdf"``) becomes a ``BadItem`` naming its path in the webhook
(``entry[0].changes[1].value.statuses[3]``) while the others go on. Only an envelope that is not
one at all raises ``InvalidWebhook``. Whatever the body, these two functions either return or raise
``InvalidWebhook``, nothing else (tests/unit/test_webhook_properties.py).

Numbers that must fit the Kafka contract are bounded here: timestamps are unix seconds in
``[0, 253402300799]`` (up to 9999-12-31), error codes fit Avro's 32-bit ``int``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, NamedTuple

import pydantic_core
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from connectors.meta.bsuid import Bsuid

__all__ = [
    "AccountUpdate",
    "AccountUpdateChange",
    "BadItem",
    "ButtonMessage",
    "Contact",
    "ContactsMessage",
    "Conversation",
    "InboundMessage",
    "InteractiveMessage",
    "InvalidWebhook",
    "LocationMessage",
    "MediaMessage",
    "MessageItem",
    "MessagesChange",
    "MessagesValue",
    "Metadata",
    "NfmReply",
    "OrderMessage",
    "OtherChange",
    "OtherItem",
    "OtherMessage",
    "Pricing",
    "QualityUpdate",
    "QualityUpdateChange",
    "ReactionMessage",
    "Status",
    "StatusItem",
    "SystemMessage",
    "TemplateStatusChange",
    "TemplateStatusUpdate",
    "TextMessage",
    "UnsupportedMessage",
    "WebhookEnvelope",
    "WebhookError",
    "WebhookItems",
    "ErrorItem",
    "iter_errors",
    "iter_messages",
    "iter_other_changes",
    "iter_statuses",
    "parse_items",
    "parse_webhook",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, coerce_numbers_to_str=True, populate_by_name=True)


class InvalidWebhook(ValueError):
    """The body is not JSON or not a WhatsApp webhook envelope; ``reason`` is short and
    free of payload content (fit for a dead-letter record)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Unix seconds a datetime (and Avro's timestamp-millis) can hold: 1970-01-01 .. 9999-12-31T23:59:59.
UnixSeconds = Annotated[int, Field(ge=0, le=253_402_300_799)]
# Meta's error codes are small; Avro's ``int`` (32 bits) carries them on the wire.
ErrorCode = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]


# --- shared pieces ------------------------------------------------------------------------------
class Metadata(_Model):
    phone_number_id: str
    display_phone_number: str | None = None


class Profile(_Model):
    name: str | None = None
    username: str | None = None  # a username user's chosen name (can change; not an identifier)


class Contact(_Model):
    """The sender of inbound messages: ``wa_id`` (their number; absent for a username user whose
    number Meta withholds), ``user_id`` (BSUID) and ``parent_user_id`` (parent BSUID)."""

    wa_id: str | None = None
    user_id: Bsuid | None = None
    parent_user_id: Bsuid | None = None
    profile: Profile | None = None


class ErrorData(_Model):
    details: str | None = None


class WebhookError(_Model):
    """An error in ``statuses[].errors``, ``messages[].errors`` or ``value.errors``."""

    code: ErrorCode
    title: str | None = None
    message: str | None = None
    error_data: ErrorData | None = None
    href: str | None = None

    @property
    def details(self) -> str | None:
        return self.error_data.details if self.error_data else None


# --- statuses -----------------------------------------------------------------------------------
class ConversationOrigin(_Model):
    type: str | None = None  # marketing, utility, authentication, service, referral_conversion …


class Conversation(_Model):
    """Mostly omitted from v24 on; present in v23 and earlier."""

    id: str | None = None
    origin: ConversationOrigin | None = None
    expiration_timestamp: UnixSeconds | None = None


class Pricing(_Model):
    billable: bool | None = None
    pricing_model: str | None = None  # CBP (conversation-based) or PMP (per-message, mid-2025)
    category: str | None = None  # marketing, utility, authentication, service, …
    type: str | None = None  # PMP: regular, free_customer_service, free_entry_point


class Status(_Model):
    """One status of an outbound message: sent, delivered, read, failed, played (Meta may add
    more; the value is kept as a string). ``delivered`` can be skipped and order is not kept."""

    id: str
    status: str
    timestamp: UnixSeconds | None = None
    recipient_id: str | None = None
    recipient_user_id: Bsuid | None = None  # the recipient's BSUID (beside or instead of recipient_id)
    recipient_parent_user_id: Bsuid | None = None
    recipient_type: str | None = None
    biz_opaque_callback_data: str | None = None
    conversation: Conversation | None = None
    pricing: Pricing | None = None
    errors: list[WebhookError] = Field(default_factory=list)

    @property
    def is_group(self) -> bool:
        """A status of a message to a group: ``recipient_id`` is the group's id, not a person's."""
        return (self.recipient_type or "").lower() == "group"


# --- inbound messages ----------------------------------------------------------------------------
class Context(_Model):
    """Set when the user replied to (or tapped a button of) one of our messages."""

    from_: str | None = Field(default=None, alias="from")
    id: str | None = None
    forwarded: bool | None = None
    frequently_forwarded: bool | None = None


class _Message(_Model):
    from_: str | None = Field(default=None, alias="from")  # absent when Meta withholds a username user's number
    from_user_id: Bsuid | None = None
    from_parent_user_id: Bsuid | None = None
    id: str
    timestamp: UnixSeconds | None = None
    type: str
    context: Context | None = None
    errors: list[WebhookError] = Field(default_factory=list)
    referral: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _has_sender(self) -> "_Message":
        if not self.from_ and not self.from_user_id:
            raise ValueError("a message needs its sender: from (a number) or from_user_id (a BSUID)")
        return self


class Text(_Model):
    body: str = ""


class TextMessage(_Message):
    type: Literal["text"]
    text: Text


class Media(_Model):
    id: str | None = None
    mime_type: str | None = None
    sha256: str | None = None
    caption: str | None = None
    filename: str | None = None
    voice: bool | None = None
    animated: bool | None = None
    url: str | None = None


class MediaMessage(_Message):
    """image, audio, video, document or sticker: the object sits under the type's name."""

    type: Literal["image", "audio", "video", "document", "sticker"]
    image: Media | None = None
    audio: Media | None = None
    video: Media | None = None
    document: Media | None = None
    sticker: Media | None = None

    @property
    def media(self) -> Media | None:
        return getattr(self, self.type)


class Location(_Model):
    latitude: float | None = None
    longitude: float | None = None
    name: str | None = None
    address: str | None = None
    url: str | None = None


class LocationMessage(_Message):
    type: Literal["location"]
    location: Location


class SharedContact(_Model):
    name: dict[str, Any] | None = None
    phones: list[dict[str, Any]] = Field(default_factory=list)
    emails: list[dict[str, Any]] = Field(default_factory=list)
    addresses: list[dict[str, Any]] = Field(default_factory=list)
    org: dict[str, Any] | None = None
    urls: list[dict[str, Any]] = Field(default_factory=list)
    birthday: str | None = None


class ContactsMessage(_Message):
    type: Literal["contacts"]
    contacts: list[SharedContact] = Field(default_factory=list)


class Reply(_Model):
    id: str
    title: str | None = None
    description: str | None = None


class NfmReply(_Model):
    """A WhatsApp Flow's answer (``interactive.type`` ``nfm_reply``): ``name`` is ``flow`` (or
    ``address_message``), ``body`` a label such as ``Sent``, and ``response_json`` a JSON *string*
    with the flow's output fields and the ``flow_token`` we sent. Meta does not include the flow
    id: ``flow_token`` is how to tell which flow answered."""

    name: str | None = None
    body: str | None = None
    response_json: str | None = None

    @property
    def response(self) -> dict[str, Any] | None:
        """``response_json`` decoded; None when absent or not a JSON object (kept as sent)."""
        if not self.response_json:
            return None
        try:
            value = json.loads(self.response_json)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def flow_token(self) -> str | None:
        token = (self.response or {}).get("flow_token")
        return token if isinstance(token, str) else None


class Interactive(_Model):
    type: str  # button_reply, list_reply, nfm_reply (flows), …
    button_reply: Reply | None = None
    list_reply: Reply | None = None
    nfm_reply: NfmReply | None = None

    @property
    def reply(self) -> Reply | None:
        return self.button_reply or self.list_reply


class InteractiveMessage(_Message):
    type: Literal["interactive"]
    interactive: Interactive


class QuickReply(_Model):
    text: str | None = None
    payload: str | None = None


class ButtonMessage(_Message):
    """A tap on a template's quick-reply button."""

    type: Literal["button"]
    button: QuickReply


class Reaction(_Model):
    message_id: str | None = None
    emoji: str | None = None  # absent or empty when the user removed the reaction


class ReactionMessage(_Message):
    type: Literal["reaction"]
    reaction: Reaction


class ProductItem(_Model):
    product_retailer_id: str | None = None
    quantity: int | None = None
    item_price: float | None = None
    currency: str | None = None


class Order(_Model):
    catalog_id: str | None = None
    text: str | None = None
    product_items: list[ProductItem] = Field(default_factory=list)


class OrderMessage(_Message):
    type: Literal["order"]
    order: Order


class System(_Model):
    body: str | None = None
    type: str | None = None  # user_changed_number, customer_identity_changed, …
    new_wa_id: str | None = None
    wa_id: str | None = None
    identity: str | None = None
    customer: str | None = None


class SystemMessage(_Message):
    type: Literal["system"]
    system: System


class UnsupportedMessage(_Message):
    """A type the Cloud API does not support (``errors`` carries 131051); ``unknown`` in older
    payloads."""

    type: Literal["unsupported", "unknown"]
    unsupported: dict[str, Any] | None = None


class OtherMessage(_Message):
    """A type this model does not know yet; everything is kept in ``model_extra``."""


_MESSAGE_TAGS = {
    "text": "text",
    "image": "media",
    "audio": "media",
    "video": "media",
    "document": "media",
    "sticker": "media",
    "location": "location",
    "contacts": "contacts",
    "interactive": "interactive",
    "button": "button",
    "reaction": "reaction",
    "order": "order",
    "system": "system",
    "unsupported": "unsupported",
    "unknown": "unsupported",
}


def _message_tag(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    # not a string (a list, an object): "other", whose model then refuses it as a bad type
    return _MESSAGE_TAGS.get(kind, "other") if isinstance(kind, str) else "other"


InboundMessage = Annotated[
    Annotated[TextMessage, Tag("text")]
    | Annotated[MediaMessage, Tag("media")]
    | Annotated[LocationMessage, Tag("location")]
    | Annotated[ContactsMessage, Tag("contacts")]
    | Annotated[InteractiveMessage, Tag("interactive")]
    | Annotated[ButtonMessage, Tag("button")]
    | Annotated[ReactionMessage, Tag("reaction")]
    | Annotated[OrderMessage, Tag("order")]
    | Annotated[SystemMessage, Tag("system")]
    | Annotated[UnsupportedMessage, Tag("unsupported")]
    | Annotated[OtherMessage, Tag("other")],
    Discriminator(_message_tag),
]


# --- change values ------------------------------------------------------------------------------
class MessagesValue(_Model):
    """``field: messages``: inbound messages with their senders' contacts, statuses of our
    messages, and errors not tied to one message."""

    messaging_product: str | None = None
    metadata: Metadata
    contacts: list[Contact] = Field(default_factory=list)
    messages: list[InboundMessage] = Field(default_factory=list)
    statuses: list[Status] = Field(default_factory=list)
    errors: list[WebhookError] = Field(default_factory=list)


class TemplateStatusUpdate(_Model):
    """``field: message_template_status_update``. ``event``: APPROVED, REJECTED, PENDING, PAUSED,
    DISABLED, FLAGGED, REINSTATED, PENDING_DELETION, … (kept as a string)."""

    event: str
    message_template_id: str | None = None
    message_template_name: str | None = None
    message_template_language: str | None = None
    reason: str | None = None
    other_info: dict[str, Any] | None = None


class QualityUpdate(_Model):
    """``field: phone_number_quality_update``. ``event``: ONBOARDING, THROUGHPUT_UPGRADE, FLAGGED,
    UNFLAGGED, UPGRADE, DOWNGRADE, …; limits are tiers such as TIER_250 … TIER_UNLIMITED."""

    event: str
    display_phone_number: str | None = None
    current_limit: str | None = None
    old_limit: str | None = None
    max_daily_conversations_per_business: str | None = None

    @property
    def limit(self) -> str | None:
        return self.max_daily_conversations_per_business or self.current_limit


class WabaInfo(_Model):
    waba_id: str | None = None
    owner_business_id: str | None = None
    partner_app_id: str | None = None


class AccountUpdate(_Model):
    """``field: account_update``. ``event``: PARTNER_ADDED, PARTNER_REMOVED, APP_UNINSTALLED,
    ACCOUNT_VIOLATION, ACCOUNT_RESTRICTION, DISABLED_UPDATE, VERIFIED_ACCOUNT, …"""

    event: str
    phone_number: str | None = None
    waba_info: WabaInfo | None = None
    violation_info: dict[str, Any] | None = None
    restriction_info: list[dict[str, Any]] | None = None
    ban_info: dict[str, Any] | None = None


class GenericValue(_Model):
    """The value of a field this model does not know; all of it in ``model_extra``."""


class MessagesChange(_Model):
    field: Literal["messages"]
    value: MessagesValue


class TemplateStatusChange(_Model):
    field: Literal["message_template_status_update"]
    value: TemplateStatusUpdate


class QualityUpdateChange(_Model):
    field: Literal["phone_number_quality_update"]
    value: QualityUpdate


class AccountUpdateChange(_Model):
    field: Literal["account_update"]
    value: AccountUpdate


class OtherChange(_Model):
    field: str
    value: GenericValue | list[Any] | str | int | float | bool | None = None


_CHANGE_TAGS = {
    "messages": "messages",
    "message_template_status_update": "template",
    "phone_number_quality_update": "quality",
    "account_update": "account",
}


def _change_tag(value: Any) -> str:
    field = value.get("field") if isinstance(value, dict) else getattr(value, "field", None)
    return _CHANGE_TAGS.get(field, "other") if isinstance(field, str) else "other"


Change = Annotated[
    Annotated[MessagesChange, Tag("messages")]
    | Annotated[TemplateStatusChange, Tag("template")]
    | Annotated[QualityUpdateChange, Tag("quality")]
    | Annotated[AccountUpdateChange, Tag("account")]
    | Annotated[OtherChange, Tag("other")],
    Discriminator(_change_tag),
]


class Entry(_Model):
    id: str  # the WABA id
    time: UnixSeconds | None = None
    changes: list[Change] = Field(default_factory=list)


class WebhookEnvelope(_Model):
    object: str
    entry: list[Entry] = Field(default_factory=list)


def parse_webhook(raw: bytes | str) -> WebhookEnvelope:
    """Parse a webhook body. Raises ``InvalidWebhook`` (a ``ValueError``) with a short reason
    when it is not JSON or not an envelope; unknown fields and types never raise."""
    try:
        return WebhookEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "json_invalid":
            raise InvalidWebhook("body is not valid JSON") from None
        raise InvalidWebhook(f"not a webhook envelope: {where}: {first['msg']}") from None
    except (TypeError, ValueError, RecursionError) as exc:  # the one typed error, whatever the body
        raise InvalidWebhook(f"not a webhook envelope: {type(exc).__name__}") from None


# --- iteration ----------------------------------------------------------------------------------
class StatusItem(NamedTuple):
    waba_id: str
    metadata: Metadata
    status: Status


class MessageItem(NamedTuple):
    waba_id: str
    metadata: Metadata
    message: _Message
    contact: Contact | None


class ErrorItem(NamedTuple):
    waba_id: str
    metadata: Metadata
    error: WebhookError


class OtherItem(NamedTuple):
    """A change that is not ``messages``: ``value`` is a ``TemplateStatusUpdate``,
    ``QualityUpdate``, ``AccountUpdate`` or ``GenericValue``."""

    waba_id: str
    field: str
    value: Any


def _messages_values(env: WebhookEnvelope) -> Iterator[tuple[str, MessagesValue]]:
    for entry in env.entry:
        for change in entry.changes:
            if isinstance(change, MessagesChange):
                yield entry.id, change.value


def iter_statuses(env: WebhookEnvelope) -> Iterator[StatusItem]:
    for waba_id, value in _messages_values(env):
        for status in value.statuses:
            yield StatusItem(waba_id, value.metadata, status)


def iter_messages(env: WebhookEnvelope) -> Iterator[MessageItem]:
    """Inbound messages, each with the contact whose ``wa_id`` (or ``user_id``) is its sender (or
    the only contact of the value when Meta left both out)."""
    for waba_id, value in _messages_values(env):
        only = value.contacts[0] if len(value.contacts) == 1 else None
        sender = _senders(value.contacts, only)
        for message in value.messages:
            yield MessageItem(waba_id, value.metadata, message, sender(message))


def _senders(contacts: list[Contact], only: Contact | None) -> Any:
    """``message -> its sender's contact entry``: matched by number, else by BSUID, else ``only``."""
    by_wa_id = {c.wa_id: c for c in contacts if c.wa_id}
    by_user_id = {c.user_id: c for c in contacts if c.user_id}

    def sender(message: Any) -> Contact | None:
        return by_wa_id.get(message.from_) or by_user_id.get(message.from_user_id) or only
    return sender


def iter_errors(env: WebhookEnvelope) -> Iterator[ErrorItem]:
    """Errors of a messages value that are not tied to one status or message."""
    for waba_id, value in _messages_values(env):
        for error in value.errors:
            yield ErrorItem(waba_id, value.metadata, error)


def iter_other_changes(env: WebhookEnvelope) -> Iterator[OtherItem]:
    for entry in env.entry:
        for change in entry.changes:
            if not isinstance(change, MessagesChange):
                yield OtherItem(entry.id, change.field, change.value)


# --- per-item reading ------------------------------------------------------------------------------
class BadItem(NamedTuple):
    """One part of a webhook that cannot be read: ``path`` names it in the webhook
    (``entry[0].changes[1].value.statuses[3]``), ``reason`` says why (no payload content),
    ``raw`` is the part as received (JSON value) for its dead letter."""

    path: str
    reason: str
    raw: Any


@dataclass(frozen=True)
class WebhookItems:
    """A webhook read item by item: each good item with its path, and the bad ones."""

    object: str
    statuses: list[tuple[str, StatusItem]] = field(default_factory=list)
    messages: list[tuple[str, MessageItem]] = field(default_factory=list)
    errors: list[tuple[str, ErrorItem]] = field(default_factory=list)
    others: list[tuple[str, OtherItem]] = field(default_factory=list)
    entry_times: dict[str, int | None] = field(default_factory=dict)
    bad: list[BadItem] = field(default_factory=list)


class _EnvelopeHead(_Model):
    object: str
    entry: list[Any] = Field(default_factory=list)


class _EntryHead(_Model):
    id: str
    time: UnixSeconds | None = None
    changes: list[Any] = Field(default_factory=list)


class _ChangeHead(_Model):
    field: str
    value: Any = None


class _MessagesHead(_Model):
    messaging_product: str | None = None
    metadata: Metadata
    contacts: list[Any] = Field(default_factory=list)
    messages: list[Any] = Field(default_factory=list)
    statuses: list[Any] = Field(default_factory=list)
    errors: list[Any] = Field(default_factory=list)


_CONTACT = TypeAdapter(Contact)
_STATUS = TypeAdapter(Status)
_MESSAGE: TypeAdapter[Any] = TypeAdapter(InboundMessage)
_ERROR = TypeAdapter(WebhookError)
_CHANGE: TypeAdapter[Any] = TypeAdapter(Change)


def _why(exc: Exception) -> str:
    """A short reason without payload content."""
    if isinstance(exc, ValidationError):
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else first["msg"]
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _read(adapter: Any, value: Any) -> Any:
    """Validate one part; a ``ValueError`` (``ValidationError``) or ``TypeError`` when it is bad."""
    if isinstance(adapter, TypeAdapter):
        return adapter.validate_python(value)
    return adapter.model_validate(value)


def parse_items(raw: bytes | str) -> WebhookItems:
    """Read a webhook body item by item (see the module's docstring). Raises ``InvalidWebhook``
    only when the body is not JSON or not an envelope (no ``object``, ``entry`` not a list)."""
    try:
        doc = pydantic_core.from_json(raw)
    except (ValueError, TypeError, RecursionError):
        raise InvalidWebhook("body is not valid JSON") from None
    try:
        head = _EnvelopeHead.model_validate(doc)
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidWebhook(f"not a webhook envelope: {_why(exc)}") from None
    out = WebhookItems(head.object)

    def part(adapter: Any, value: Any, path: str) -> Any:
        try:
            return _read(adapter, value)
        except (ValueError, TypeError, RecursionError) as exc:
            out.bad.append(BadItem(path, _why(exc), value))
            return None

    for i, raw_entry in enumerate(head.entry):
        entry = part(_EntryHead, raw_entry, f"entry[{i}]")
        if entry is None:
            continue
        out.entry_times[entry.id] = entry.time  # the last entry of a WABA wins, as in parse_webhook's users
        for j, raw_change in enumerate(entry.changes):
            cpath = f"entry[{i}].changes[{j}]"
            change = part(_ChangeHead, raw_change, cpath)
            if change is None:
                continue
            if change.field != "messages":
                other = part(_CHANGE, raw_change, cpath)
                if other is not None:
                    out.others.append((cpath, OtherItem(entry.id, other.field, other.value)))
                continue
            value = part(_MessagesHead, change.value, f"{cpath}.value")
            if value is None:
                continue
            vpath = f"{cpath}.value"
            read = [part(_CONTACT, c, f"{vpath}.contacts[{k}]") for k, c in enumerate(value.contacts)]
            contacts = [c for c in read if c is not None]
            only = contacts[0] if len(value.contacts) == 1 and contacts else None
            sender = _senders(contacts, only)
            for k, item in enumerate(value.statuses):
                if (st := part(_STATUS, item, f"{vpath}.statuses[{k}]")) is not None:
                    out.statuses.append((f"{vpath}.statuses[{k}]", StatusItem(entry.id, value.metadata, st)))
            for k, item in enumerate(value.messages):
                if (msg := part(_MESSAGE, item, f"{vpath}.messages[{k}]")) is not None:
                    out.messages.append((f"{vpath}.messages[{k}]", MessageItem(
                        entry.id, value.metadata, msg, sender(msg))))
            for k, item in enumerate(value.errors):
                if (err := part(_ERROR, item, f"{vpath}.errors[{k}]")) is not None:
                    out.errors.append((f"{vpath}.errors[{k}]", ErrorItem(entry.id, value.metadata, err)))
    return out
