"""Outbound message objects for ``POST /{version}/{phone_number_id}/messages``.

Each model validates Meta's limits when it is built (a clear ``pydantic.ValidationError``, a
``ValueError``) and ``to_request()`` returns the exact JSON body Meta expects::

    TextMessage(to="+4915112345678", body="Hello").to_request()
    == {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "4915112345678",
        "type": "text", "text": {"body": "Hello", "preview_url": False}}

Common fields: ``to`` (digits with country code, a leading ``+`` allowed and dropped) and/or
``recipient`` (a business-scoped user id, BSUID or parent BSUID, sent exactly as Meta gave it:
how to reach a username user whose number is withheld; when both are given Meta uses ``to``),
``biz_opaque_callback_data`` (our own id; Meta echoes it on every status webhook) and
``reply_to`` (an inbound wamid, sent as ``context.message_id``). ``addressed(message, to=…,
recipient=…)`` puts the recipient fields on a message object (what the send worker does with a
command's sealed recipient).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.meta.bsuid import Bsuid

__all__ = [
    "AudioMessage",
    "Button",
    "CarouselCard",
    "CarouselComponent",
    "CtaUrlMessage",
    "FlowMessage",
    "LocationRequestMessage",
    "MediaHeader",
    "ButtonComponent",
    "ButtonsMessage",
    "CurrencyParameter",
    "DateTimeParameter",
    "DocumentMessage",
    "HeaderComponent",
    "BodyComponent",
    "ImageMessage",
    "ListMessage",
    "ListRow",
    "ListSection",
    "LocationMessage",
    "MediaParameter",
    "OutboundMessage",
    "PayloadParameter",
    "ReactionMessage",
    "ReadReceipt",
    "StickerMessage",
    "TemplateMessage",
    "TextMessage",
    "TextParameter",
    "VideoMessage",
    "url_button",
    "quick_reply_button",
    "addressed",
    "MAX_TEXT",
    "MAX_CAPTION",
]

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_LIST_ROWS = 10
MAX_LIST_SECTIONS = 10
MAX_OPAQUE = 512
MAX_HEADER_TEXT = 60
MAX_FOOTER = 60
MAX_INTERACTIVE_BODY = 1024
MAX_CTA_TEXT = 20
MAX_FLOW_CTA = 30  # Meta's flow-message reference advises ≤ 30 (its older "Sending a Flow" page said 20)
MAX_CAROUSEL_CARDS = 10

_PHONE = re.compile(r"^\+?[0-9]{6,15}$")
_WS_RUN = re.compile(r" {5,}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def phone_number(value: str) -> str:
    """A recipient's number as Meta takes it (digits with country code; ``+``, spaces, dashes dropped)."""
    cleaned = value.strip().replace(" ", "").replace("-", "")
    if not _PHONE.match(cleaned):
        raise ValueError(f"'to' must be a phone number in international format (digits, optional +), got {value!r}")
    return cleaned.lstrip("+")


def addressed(body: dict[str, Any], *, to: str | None, recipient: str | None) -> dict[str, Any]:
    """``body`` with the Graph request's recipient fields: ``to`` (a number) and/or ``recipient``
    (a BSUID), only those given. Meta's send API takes a BSUID in ``recipient`` and uses ``to`` when
    both are there (docs/meta-api.md). ``ValueError`` when neither is given."""
    if not to and not recipient:
        raise ValueError("no recipient: neither a phone number ('to') nor a BSUID ('recipient')")
    out = dict(body)
    if to:
        out["to"] = to
    if recipient:
        out["recipient"] = recipient
    return out


# --- common envelope ------------------------------------------------------------------------
class OutboundMessage(_Model):
    """Fields shared by every message; subclasses add their object and ``_content()``."""

    type: ClassVar[str]

    to: str | None = None
    recipient: Bsuid | None = None  # a BSUID or parent BSUID (username users); ``to`` wins when both
    biz_opaque_callback_data: Annotated[str, Field(max_length=MAX_OPAQUE)] | None = None
    reply_to: str | None = None

    @field_validator("to")
    @classmethod
    def _check_to(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return phone_number(value)

    @model_validator(mode="after")
    def _has_recipient(self) -> "OutboundMessage":
        if self.to is None and self.recipient is None:
            raise ValueError("a message needs its recipient: 'to' (a phone number) or 'recipient' (a BSUID)")
        return self

    def _content(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_request(self) -> dict[str, Any]:
        body: dict[str, Any] = addressed({"messaging_product": "whatsapp", "recipient_type": "individual"},
                                         to=self.to, recipient=self.recipient)
        body |= {"type": self.type, self.type: self._content()}
        if self.reply_to:
            body["context"] = {"message_id": self.reply_to}
        if self.biz_opaque_callback_data is not None:
            body["biz_opaque_callback_data"] = self.biz_opaque_callback_data
        return body


# --- text -----------------------------------------------------------------------------------
class TextMessage(OutboundMessage):
    type: ClassVar[str] = "text"
    body: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    preview_url: bool = False

    def _content(self) -> dict[str, Any]:
        return {"body": self.body, "preview_url": self.preview_url}


# --- media ----------------------------------------------------------------------------------
class _Media(OutboundMessage):
    """By uploaded media ``id`` or public https ``link`` — exactly one of them."""

    id: str | None = None
    link: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.id is None) == (self.link is None):
            raise ValueError(f"{self.type} needs exactly one of 'id' (uploaded media) or 'link' (URL)")
        if self.link is not None and not self.link.lower().startswith(("https://", "http://")):
            raise ValueError(f"{self.type} link must be an http(s) URL")
        return self

    def _content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"id": self.id} if self.id is not None else {"link": self.link}
        for key in ("caption", "filename"):
            value = getattr(self, key, None)
            if value is not None:
                content[key] = value
        return content


Caption = Annotated[str, Field(min_length=1, max_length=MAX_CAPTION)]


class ImageMessage(_Media):
    type: ClassVar[str] = "image"
    caption: Caption | None = None


class VideoMessage(_Media):
    type: ClassVar[str] = "video"
    caption: Caption | None = None


class DocumentMessage(_Media):
    type: ClassVar[str] = "document"
    caption: Caption | None = None
    filename: Annotated[str, Field(min_length=1, max_length=240)] | None = None


class AudioMessage(_Media):
    """Audio takes no caption (Meta rejects one)."""

    type: ClassVar[str] = "audio"


class StickerMessage(_Media):
    """A sticker (webp) by id or link; no caption."""

    type: ClassVar[str] = "sticker"


class LocationMessage(OutboundMessage):
    type: ClassVar[str] = "location"
    latitude: Annotated[float, Field(ge=-90, le=90)]
    longitude: Annotated[float, Field(ge=-180, le=180)]
    name: Annotated[str, Field(max_length=1000)] | None = None
    address: Annotated[str, Field(max_length=1000)] | None = None

    def _content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"latitude": self.latitude, "longitude": self.longitude}
        if self.name is not None:
            content["name"] = self.name
        if self.address is not None:
            content["address"] = self.address
        return content


# --- interactive ----------------------------------------------------------------------------
class Button(_Model):
    id: Annotated[str, Field(min_length=1, max_length=256)]
    title: Annotated[str, Field(min_length=1, max_length=MAX_BUTTON_TITLE)]


class _Interactive(OutboundMessage):
    type: ClassVar[str] = "interactive"
    body: Annotated[str, Field(min_length=1, max_length=MAX_INTERACTIVE_BODY)]
    header: Annotated[str, Field(min_length=1, max_length=MAX_HEADER_TEXT)] | None = None
    footer: Annotated[str, Field(min_length=1, max_length=MAX_FOOTER)] | None = None

    def _frame(self, kind: str, action: dict[str, Any]) -> dict[str, Any]:
        content: dict[str, Any] = {"type": kind}
        if self.header is not None:
            content["header"] = {"type": "text", "text": self.header}
        content["body"] = {"text": self.body}
        if self.footer is not None:
            content["footer"] = {"text": self.footer}
        content["action"] = action
        return content


class ButtonsMessage(_Interactive):
    """Interactive reply buttons: 1 to 3, titles ≤ 20 chars, ids and titles unique."""

    buttons: Annotated[list[Button], Field(min_length=1, max_length=MAX_BUTTONS)]

    @model_validator(mode="after")
    def _unique(self):
        ids = [b.id for b in self.buttons]
        titles = [b.title for b in self.buttons]
        if len(set(ids)) != len(ids) or len(set(titles)) != len(titles):
            raise ValueError("reply button ids and titles must be unique")
        return self

    def _content(self) -> dict[str, Any]:
        return self._frame(
            "button",
            {"buttons": [{"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in self.buttons]},
        )


class ListRow(_Model):
    id: Annotated[str, Field(min_length=1, max_length=200)]
    title: Annotated[str, Field(min_length=1, max_length=24)]
    description: Annotated[str, Field(max_length=72)] | None = None


class ListSection(_Model):
    title: Annotated[str, Field(min_length=1, max_length=24)] | None = None
    rows: Annotated[list[ListRow], Field(min_length=1)]


class ListMessage(_Interactive):
    """Interactive list: ≤ 10 sections and ≤ 10 rows in total; a title on every section when
    there are several; row ids unique; the menu button label ≤ 20 chars."""

    body: Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
    button: Annotated[str, Field(min_length=1, max_length=MAX_BUTTON_TITLE)]
    sections: Annotated[list[ListSection], Field(min_length=1, max_length=MAX_LIST_SECTIONS)]

    @model_validator(mode="after")
    def _limits(self):
        rows = [row for section in self.sections for row in section.rows]
        if len(rows) > MAX_LIST_ROWS:
            raise ValueError(f"a list message has at most {MAX_LIST_ROWS} rows in total, got {len(rows)}")
        if len({r.id for r in rows}) != len(rows):
            raise ValueError("list row ids must be unique")
        if len(self.sections) > 1 and any(s.title is None for s in self.sections):
            raise ValueError("every section needs a title when a list has several sections")
        return self

    def _content(self) -> dict[str, Any]:
        sections = [
            {
                **({"title": s.title} if s.title is not None else {}),
                "rows": [r.model_dump(exclude_none=True) for r in s.rows],
            }
            for s in self.sections
        ]
        return self._frame("list", {"button": self.button, "sections": sections})


class MediaHeader(_Model):
    """An interactive message's image, video or document header — by public link (Meta does not
    take an uploaded media id in interactive headers)."""

    kind: Literal["image", "video", "document"]
    link: Annotated[str, Field(min_length=1, max_length=2000)]

    @field_validator("link")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.lower().startswith(("https://", "http://")):
            raise ValueError("a header media link must be an http(s) URL")
        return value


class CtaUrlMessage(_Interactive):
    """A call-to-action URL button: one button (label ≤ 20 chars) that opens ``url``, so the raw
    link need not be in the body. Optional header (text, or ``header_media``) and footer."""

    display_text: Annotated[str, Field(min_length=1, max_length=MAX_CTA_TEXT)]
    url: Annotated[str, Field(min_length=1, max_length=2000)]
    header_media: MediaHeader | None = None

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.lower().startswith(("https://", "http://")):
            raise ValueError("a CTA URL button needs an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one_header(self):
        if self.header is not None and self.header_media is not None:
            raise ValueError("a CTA URL message has one header: text or media, not both")
        return self

    def _content(self) -> dict[str, Any]:
        content = self._frame("cta_url", {"name": "cta_url", "parameters": {"display_text": self.display_text, "url": self.url}})
        if self.header_media is not None:
            kind = self.header_media.kind
            content = {"type": "cta_url", "header": {"type": kind, kind: {"link": self.header_media.link}},
                       **{k: v for k, v in content.items() if k != "type"}}
        return content


class LocationRequestMessage(OutboundMessage):
    """Asks the user to share their location (a "Send location" button); the answer arrives as an
    ordinary inbound ``location`` message. Body only: no header or footer."""

    type: ClassVar[str] = "interactive"
    body: Annotated[str, Field(min_length=1, max_length=MAX_INTERACTIVE_BODY)]

    def _content(self) -> dict[str, Any]:
        return {"type": "location_request_message", "body": {"text": self.body}, "action": {"name": "send_location"}}


class FlowMessage(_Interactive):
    """Opens a WhatsApp Flow: by ``flow_id`` or ``flow_name`` (exactly one), with a CTA label
    ≤ 30 chars. ``flow_action`` ``navigate`` (default) may name the first ``screen`` (Meta's
    default: the flow's entry screen) and pass it ``data``; ``data_exchange`` takes neither (the
    flow's endpoint decides). The user's answer arrives as an inbound ``interactive``
    ``nfm_reply`` whose ``response_json`` carries ``flow_token`` back."""

    flow_cta: Annotated[str, Field(min_length=1, max_length=MAX_FLOW_CTA)]
    flow_id: Annotated[str, Field(min_length=1)] | None = None
    flow_name: Annotated[str, Field(min_length=1)] | None = None
    flow_token: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    flow_action: Literal["navigate", "data_exchange"] = "navigate"
    screen: Annotated[str, Field(min_length=1)] | None = None
    data: dict[str, Any] | None = None
    mode: Literal["published", "draft"] | None = None

    @model_validator(mode="after")
    def _shape(self):
        if (self.flow_id is None) == (self.flow_name is None):
            raise ValueError("a flow message needs exactly one of 'flow_id' or 'flow_name'")
        if self.data is not None and self.screen is None:
            raise ValueError("flow 'data' is for the first 'screen': name it")
        if self.flow_action == "data_exchange" and (self.screen is not None or self.data is not None):
            raise ValueError("flow_action 'data_exchange' takes no 'screen' or 'data' (the flow endpoint decides)")
        if self.data is not None and not self.data:
            raise ValueError("flow 'data' must be a non-empty object when given")
        return self

    def _content(self) -> dict[str, Any]:
        params: dict[str, Any] = {"flow_message_version": "3", "flow_cta": self.flow_cta, "flow_action": self.flow_action}
        if self.flow_id is not None:
            params["flow_id"] = self.flow_id
        else:
            params["flow_name"] = self.flow_name
        if self.flow_token is not None:
            params["flow_token"] = self.flow_token
        if self.mode is not None:
            params["mode"] = self.mode
        if self.screen is not None:
            payload: dict[str, Any] = {"screen": self.screen}
            if self.data is not None:
                payload["data"] = self.data
            params["flow_action_payload"] = payload
        return self._frame("flow", {"name": "flow", "parameters": params})


# --- reaction and read receipt -----------------------------------------------------------------
class ReactionMessage(OutboundMessage):
    """React to ``message_id`` with ``emoji``; an empty emoji removes the reaction."""

    type: ClassVar[str] = "reaction"
    message_id: Annotated[str, Field(min_length=1)]
    emoji: str

    def _content(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "emoji": self.emoji}


class ReadReceipt(_Model):
    """Marks an inbound message read (optionally showing a typing indicator). Not a message:
    it has no recipient, and Meta answers ``{"success": true}``."""

    message_id: Annotated[str, Field(min_length=1)]
    typing_indicator: bool = False

    def to_request(self) -> dict[str, Any]:
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": self.message_id}
        if self.typing_indicator:
            body["typing_indicator"] = {"type": "text"}
        return body


# --- templates ------------------------------------------------------------------------------
class _Parameter(_Model):
    """Named parameters (``parameter_name``) are for templates created with named variables;
    a component uses either named or positional parameters, never both."""

    parameter_name: Annotated[str, Field(pattern=r"^[a-z0-9_]+$")] | None = None

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _named(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.parameter_name is not None:
            body["parameter_name"] = self.parameter_name
        return body


class TextParameter(_Parameter):
    text: Annotated[str, Field(min_length=1, max_length=32768)]

    def to_json(self) -> dict[str, Any]:
        return self._named({"type": "text", "text": self.text})


class CurrencyParameter(_Parameter):
    fallback_value: str
    code: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    amount_1000: int

    def to_json(self) -> dict[str, Any]:
        return self._named(
            {"type": "currency", "currency": {"fallback_value": self.fallback_value, "code": self.code, "amount_1000": self.amount_1000}}
        )


class DateTimeParameter(_Parameter):
    fallback_value: str

    def to_json(self) -> dict[str, Any]:
        return self._named({"type": "date_time", "date_time": {"fallback_value": self.fallback_value}})


class MediaParameter(_Parameter):
    """A header image, video or document, by id or link."""

    kind: Literal["image", "video", "document"]
    id: str | None = None
    link: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if (self.id is None) == (self.link is None):
            raise ValueError(f"{self.kind} parameter needs exactly one of 'id' or 'link'")
        if self.filename is not None and self.kind != "document":
            raise ValueError("only a document parameter takes a filename")
        return self

    def to_json(self) -> dict[str, Any]:
        media: dict[str, Any] = {"id": self.id} if self.id is not None else {"link": self.link}
        if self.filename is not None:
            media["filename"] = self.filename
        return self._named({"type": self.kind, self.kind: media})


class PayloadParameter(_Parameter):
    """The payload a quick-reply button returns in the inbound ``button`` message."""

    payload: Annotated[str, Field(min_length=1, max_length=1000)]

    def to_json(self) -> dict[str, Any]:
        return {"type": "payload", "payload": self.payload}


Parameter = TextParameter | CurrencyParameter | DateTimeParameter | MediaParameter | PayloadParameter


def _check_naming(parameters: list[_Parameter]) -> None:
    named = [p.parameter_name is not None for p in parameters if not isinstance(p, PayloadParameter)]
    if any(named) and not all(named):
        raise ValueError("mix of named and positional parameters in one component")
    names = [p.parameter_name for p in parameters if p.parameter_name is not None]
    if len(set(names)) != len(names):
        raise ValueError("duplicate parameter_name in one component")


class HeaderComponent(_Model):
    parameters: Annotated[list[TextParameter | MediaParameter], Field(min_length=1, max_length=1)]

    @model_validator(mode="after")
    def _limits(self):
        param = self.parameters[0]
        if isinstance(param, TextParameter) and len(param.text) > MAX_HEADER_TEXT:
            raise ValueError(f"a header text parameter has at most {MAX_HEADER_TEXT} chars")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"type": "header", "parameters": [p.to_json() for p in self.parameters]}


class BodyComponent(_Model):
    parameters: Annotated[list[TextParameter | CurrencyParameter | DateTimeParameter], Field(min_length=1)]

    @model_validator(mode="after")
    def _limits(self):
        _check_naming(self.parameters)
        for p in self.parameters:
            if isinstance(p, TextParameter) and ("\n" in p.text or "\t" in p.text or _WS_RUN.search(p.text)):
                # Meta answers 132018 for these; fail here with the reason instead.
                raise ValueError("a body text parameter cannot contain newlines, tabs or more than 4 consecutive spaces")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"type": "body", "parameters": [p.to_json() for p in self.parameters]}


class ButtonComponent(_Model):
    sub_type: Literal["url", "quick_reply", "copy_code", "flow", "catalog"]
    index: Annotated[int, Field(ge=0, le=9)]
    parameters: list[TextParameter | PayloadParameter] = Field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "button",
            "sub_type": self.sub_type,
            "index": str(self.index),
            "parameters": [p.to_json() for p in self.parameters],
        }


def url_button(index: int, suffix: str) -> ButtonComponent:
    """A dynamic URL button: ``suffix`` fills the template URL's ``{{1}}``, percent-encoded."""
    return ButtonComponent(sub_type="url", index=index, parameters=[TextParameter(text=quote(suffix, safe="-._~"))])


def quick_reply_button(index: int, payload: str) -> ButtonComponent:
    return ButtonComponent(sub_type="quick_reply", index=index, parameters=[PayloadParameter(payload=payload)])


class CarouselCard(_Model):
    """One card of a media-card carousel template: its image or video header (by id or link),
    optional body parameters, and the parameters of its buttons."""

    card_index: Annotated[int, Field(ge=0, lt=MAX_CAROUSEL_CARDS)]
    header: MediaParameter
    body: BodyComponent | None = None
    buttons: list[ButtonComponent] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self):
        if self.header.kind not in ("image", "video"):
            raise ValueError("a carousel card header is an image or a video")
        if self.header.parameter_name is not None:
            raise ValueError("a carousel card header takes no parameter_name")
        if any(b.sub_type not in ("quick_reply", "url") for b in self.buttons):
            raise ValueError("carousel card buttons are quick_reply or url")
        indexes = [b.index for b in self.buttons]
        if len(set(indexes)) != len(indexes):
            raise ValueError("two buttons with the same index on one carousel card")
        return self

    def to_json(self) -> dict[str, Any]:
        components: list[dict[str, Any]] = [{"type": "header", "parameters": [self.header.to_json()]}]
        if self.body is not None:
            components.append(self.body.to_json())
        components.extend(b.to_json() for b in self.buttons)
        return {"card_index": self.card_index, "components": components}


class CarouselComponent(_Model):
    """The ``carousel`` component of a media-card carousel template: up to 10 cards, indexes
    unique, every card with the same kind of header and the same button kinds (Meta requires all
    cards of a template to have the same components)."""

    cards: Annotated[list[CarouselCard], Field(min_length=1, max_length=MAX_CAROUSEL_CARDS)]

    @model_validator(mode="after")
    def _same_shape(self):
        indexes = [c.card_index for c in self.cards]
        if len(set(indexes)) != len(indexes):
            raise ValueError("carousel card_index values must be unique")
        shapes = {(c.header.kind, c.body is not None, tuple((b.index, b.sub_type) for b in sorted(c.buttons, key=lambda b: b.index)))
                  for c in self.cards}
        if len(shapes) > 1:
            raise ValueError("every carousel card needs the same header kind, body presence and buttons")
        return self

    def to_json(self) -> dict[str, Any]:
        return {"type": "carousel", "cards": [c.to_json() for c in sorted(self.cards, key=lambda c: c.card_index)]}


Component = HeaderComponent | BodyComponent | ButtonComponent | CarouselComponent


class TemplateMessage(OutboundMessage):
    """An approved template by ``name`` and ``language`` (e.g. ``en_US``) with its parameters."""

    type: ClassVar[str] = "template"
    name: Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[a-z0-9_]+$")]
    language: Annotated[str, Field(min_length=2, max_length=15)]
    components: list[Component] = Field(default_factory=list)

    @model_validator(mode="after")
    def _structure(self):
        kinds = [type(c) for c in self.components]
        if kinds.count(HeaderComponent) > 1 or kinds.count(BodyComponent) > 1 or kinds.count(CarouselComponent) > 1:
            raise ValueError("a template has at most one header, one body and one carousel component")
        if CarouselComponent in kinds and HeaderComponent in kinds:
            raise ValueError("a carousel template has no message header (each card has its own)")
        indexes = [c.index for c in self.components if isinstance(c, ButtonComponent)]
        if len(set(indexes)) != len(indexes):
            raise ValueError("two button components with the same index")
        return self

    def _content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"name": self.name, "language": {"code": self.language}}
        if self.components:
            content["components"] = [c.to_json() for c in self.components]
        return content
