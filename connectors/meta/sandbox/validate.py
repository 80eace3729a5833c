"""Request validation of ``POST /{phone_number_id}/messages`` bodies, as Meta answers it.

Returns what the send engine needs (type, recipient, template reference, body parameter count) or
raises a Meta-shaped ``GraphError``: 100 for a malformed or oversized parameter, 131008 for a
missing required one, 131009 for a value out of range.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from connectors.meta.bsuid import is_bsuid
from connectors.meta.sandbox.graph_errors import GraphError, invalid, missing

MEDIA = frozenset({"image", "audio", "video", "document", "sticker"})
SESSION_TYPES = MEDIA | {"text", "interactive", "reaction", "location", "contacts"}
_DIGITS = re.compile(r"^\+?[0-9][0-9 ()\-]{6,20}$")


@dataclass(slots=True)
class SendRequest:
    """``to`` (a number, as given) wins over ``recipient`` (a BSUID) when both are there, as at Meta:
    ``wa_id`` is then the number's digits and ``user_id`` None; a send by BSUID only has ``wa_id``
    None and ``user_id`` the BSUID."""

    type: str
    to: str | None  # as given
    wa_id: str | None  # digits only
    template: tuple[str, str] | None = None  # (name, language code)
    body_params: int = 0
    user_id: str | None = None  # the BSUID the message went to (sent without a number)

    @property
    def input(self) -> str:
        """What the request named the recipient by (Meta's ``contacts[].input``)."""
        return self.to if self.to is not None else self.user_id or ""


def _required(obj: dict, key: str, where: str) -> object:
    v = obj.get(key)
    if v is None or v == "":
        raise GraphError(131008, details=f"The parameter {where}['{key}'] is required.")
    return v


def parse_send(body: object) -> SendRequest:
    if not isinstance(body, dict):
        raise GraphError(100, details="The request body must be a JSON object.")
    if body.get("messaging_product") != "whatsapp":
        raise missing("messaging_product") if "messaging_product" not in body else invalid(
            "messaging_product", "must be one of {WHATSAPP}")
    to, recipient = body.get("to"), body.get("recipient")
    if not to and not recipient:
        raise missing("to")
    wa_id: str | None = None
    user_id: str | None = None
    if to:  # the number takes precedence over a BSUID (Meta, "Business-scoped user IDs")
        if not isinstance(to, str) or not _DIGITS.match(to):
            raise GraphError(100, details=f"Invalid parameter: to. '{to}' is not a valid WhatsApp phone number.",
                             message="(#100) Invalid parameter")
        wa_id = re.sub(r"\D", "", to)
        if not 8 <= len(wa_id) <= 15:
            raise GraphError(100, details=f"Invalid parameter: to. '{to}' is not a valid WhatsApp phone number.",
                             message="(#100) Invalid parameter")
    if recipient is not None and not is_bsuid(recipient):
        raise GraphError(100, details="Invalid parameter: recipient is not a valid business-scoped user ID.",
                         message="(#100) Invalid parameter")
    if not to:
        user_id = recipient
    rt = body.get("recipient_type", "individual")
    if rt not in ("individual", "group"):
        raise invalid("recipient_type", "must be one of {individual, group}")
    kind = body.get("type", "text")
    if kind == "template":
        req = _template(body, to, wa_id)
        req.user_id = user_id
        return req
    if kind not in SESSION_TYPES:
        raise invalid("type", f"must be one of {{template, {', '.join(sorted(SESSION_TYPES))}}}")
    obj = body.get(kind)
    if not isinstance(obj, dict):
        raise GraphError(131008, details=f"The parameter {kind} is required.")
    if kind == "text":
        text = _required(obj, "body", "text")
        if not isinstance(text, str):
            raise invalid("text['body']", "must be a string")
        if len(text) > 4096:
            raise GraphError(100, message="(#100) Param text['body'] must be at most 4096 characters long.",
                             details="Param text['body'] must be at most 4096 characters long.")
    elif kind in MEDIA:
        if not obj.get("id") and not obj.get("link"):
            raise GraphError(131008, details=f"The parameter {kind}['id'] or {kind}['link'] is required.")
        caption = obj.get("caption")
        if caption is not None:
            if kind in ("audio", "sticker"):
                raise invalid(f"{kind}['caption']", "is not supported for this media type")
            if len(caption) > 1024:
                raise GraphError(100, message=f"(#100) Param {kind}['caption'] must be at most 1024 characters long.",
                                 details="caption too long")
    elif kind == "interactive":
        _interactive(obj)
    elif kind == "reaction":
        _required(obj, "message_id", "reaction")
        if "emoji" not in obj:
            raise GraphError(131008, details="The parameter reaction['emoji'] is required.")
    elif kind == "location":
        _required(obj, "latitude", "location")
        _required(obj, "longitude", "location")
    elif kind == "contacts" and not obj:
        raise GraphError(131008, details="The parameter contacts is required.")
    return SendRequest(kind, to, wa_id, user_id=user_id)


def _template(body: dict, to: str | None, wa_id: str | None) -> SendRequest:
    tpl = body.get("template")
    if not isinstance(tpl, dict):
        raise GraphError(131008, details="The parameter template is required.")
    name = _required(tpl, "name", "template")
    lang = tpl.get("language")
    if not isinstance(lang, dict) or not lang.get("code"):
        raise GraphError(131008, details="The parameter template['language']['code'] is required.")
    n = 0
    comps = tpl.get("components") or []
    if not isinstance(comps, list):
        raise invalid("template['components']", "must be an array")
    for c in comps:
        if not isinstance(c, dict) or "type" not in c:
            raise GraphError(131008, details="The parameter template['components'][]['type'] is required.")
        if str(c["type"]).lower() == "carousel":
            _carousel(c)
        if str(c["type"]).lower() == "body":
            params = c.get("parameters") or []
            for p in params:
                if not isinstance(p, dict) or "type" not in p:
                    raise GraphError(131008, details="Parameter 'type' is required for each template parameter.")
            n += len(params)
    return SendRequest("template", to, wa_id, (str(name), str(lang["code"])), n)


def _interactive(obj: dict) -> None:
    kind = _required(obj, "type", "interactive")
    body = obj.get("body")
    if kind in ("button", "list", "cta_url", "flow", "location_request_message") and (
            not isinstance(body, dict) or not body.get("text")):
        raise GraphError(131008, details="The parameter interactive['body']['text'] is required.")
    if isinstance(body, dict) and isinstance(body.get("text"), str) and len(body["text"]) > 4096:
        raise GraphError(100, details="Param interactive['body']['text'] must be at most 4096 characters long.")
    action = obj.get("action")
    if not isinstance(action, dict):
        raise GraphError(131008, details="The parameter interactive['action'] is required.")
    header = obj.get("header")
    if header is not None:
        _header(header, kind)
    if kind == "cta_url":
        _cta_url(action)
    elif kind == "location_request_message":
        if action.get("name") != "send_location":
            raise invalid("interactive['action']['name']", "must be send_location")
    elif kind == "flow":
        _flow(action)
    if kind == "button":
        buttons = action.get("buttons") or []
        if not 1 <= len(buttons) <= 3:
            raise GraphError(131009, details="Interactive reply buttons must be between 1 and 3.")
        for b in buttons:
            title = ((b or {}).get("reply") or {}).get("title", "")
            if not title or len(title) > 20:
                raise GraphError(131009, details="Button title length must be between 1 and 20 characters.")
    elif kind == "list":
        sections = action.get("sections") or []
        rows = sum(len((s or {}).get("rows") or []) for s in sections)
        if not action.get("button") or not sections:
            raise GraphError(131008, details="The parameters interactive['action']['button'] and sections are required.")
        if not 1 <= rows <= 10:
            raise GraphError(131009, details="The total number of rows across sections must be between 1 and 10.")


def _label(value: object, where: str, limit: int = 20) -> None:
    if not isinstance(value, str) or not value:
        raise GraphError(131008, details=f"The parameter {where} is required.")
    if len(value) > limit:
        raise GraphError(131009, details=f"{where} must be between 1 and {limit} characters.")


def _header(header: object, kind: str) -> None:
    if not isinstance(header, dict) or header.get("type") not in ("text", "image", "video", "document"):
        raise invalid("interactive['header']['type']", "must be one of {text, image, video, document}")
    htype = header["type"]
    if htype == "text":
        text = header.get("text")
        if not isinstance(text, str) or not text:
            raise GraphError(131008, details="The parameter interactive['header']['text'] is required.")
        if len(text) > 60:
            raise GraphError(131009, details="interactive['header']['text'] must be at most 60 characters.")
        return
    if kind in ("list", "location_request_message"):  # list: text only; location request: no header
        raise invalid("interactive['header']['type']", f"{htype} headers are not supported for {kind} messages")
    media = header.get(htype)
    if not isinstance(media, dict) or not (media.get("link") or media.get("id")):
        raise GraphError(131008, details=f"The parameter interactive['header']['{htype}']['link'] is required.")


def _cta_url(action: dict) -> None:
    if action.get("name") != "cta_url":
        raise invalid("interactive['action']['name']", "must be cta_url")
    params = action.get("parameters")
    if not isinstance(params, dict):
        raise GraphError(131008, details="The parameter interactive['action']['parameters'] is required.")
    _label(params.get("display_text"), "interactive['action']['parameters']['display_text']")
    url = params.get("url")
    if not isinstance(url, str) or not url.lower().startswith(("https://", "http://")):
        raise GraphError(131009, details="interactive['action']['parameters']['url'] must be a valid URL.")


def _flow(action: dict) -> None:
    if action.get("name") != "flow":
        raise invalid("interactive['action']['name']", "must be flow")
    params = action.get("parameters")
    if not isinstance(params, dict):
        raise GraphError(131008, details="The parameter interactive['action']['parameters'] is required.")
    where = "interactive['action']['parameters']"
    if str(params.get("flow_message_version", "")) != "3":
        raise invalid(f"{where}['flow_message_version']", "must be 3")
    _label(params.get("flow_cta"), f"{where}['flow_cta']", 30)
    if ("flow_id" in params) == ("flow_name" in params):
        raise GraphError(131009, details=f"Exactly one of {where}['flow_id'] or ['flow_name'] is required.")
    flow_action = params.get("flow_action", "navigate")
    if flow_action not in ("navigate", "data_exchange"):
        raise invalid(f"{where}['flow_action']", "must be one of {navigate, data_exchange}")
    payload = params.get("flow_action_payload")
    if flow_action == "navigate" and payload is not None:
        if not isinstance(payload, dict) or not payload.get("screen"):
            raise GraphError(131008, details=f"The parameter {where}['flow_action_payload']['screen'] is required.")
        if "data" in payload and (not isinstance(payload["data"], dict) or not payload["data"]):
            raise invalid(f"{where}['flow_action_payload']['data']", "must be a non-empty object")
    elif payload is not None:
        raise invalid(f"{where}['flow_action_payload']", "is not allowed with flow_action data_exchange")


def _carousel(comp: dict) -> None:
    cards = comp.get("cards")
    if not isinstance(cards, list) or not cards:
        raise GraphError(131008, details="The parameter template['components'][]['cards'] is required.")
    if len(cards) > 10:
        raise GraphError(131009, details="A carousel has at most 10 cards.")
    seen: set[int] = set()
    shapes = set()
    for card in cards:
        if not isinstance(card, dict):
            raise invalid("template['components'][]['cards'][]", "must be an object")
        idx = card.get("card_index")
        if not isinstance(idx, int) or isinstance(idx, bool) or not 0 <= idx < 10 or idx in seen:
            raise GraphError(131009, details="card_index must be unique integers from 0 to 9.")
        seen.add(idx)
        comps = card.get("components")
        if not isinstance(comps, list):
            raise GraphError(131008, details="The parameter cards[]['components'] is required.")
        header = next((c for c in comps if isinstance(c, dict) and str(c.get("type")).lower() == "header"), None)
        params = (header or {}).get("parameters") or []
        kind = params[0].get("type") if params and isinstance(params[0], dict) else None
        if kind not in ("image", "video"):
            raise GraphError(131009, details="Each carousel card needs an image or video header parameter.")
        media = params[0].get(kind)
        if not isinstance(media, dict) or not (media.get("id") or media.get("link")):
            raise GraphError(131008, details=f"The parameter cards[]['header'][{kind}]['id' or 'link'] is required.")
        buttons = tuple(sorted((str(c.get("index")), str(c.get("sub_type"))) for c in comps
                               if isinstance(c, dict) and str(c.get("type")).lower() == "button"))
        shapes.add((kind, buttons))
    if len(shapes) > 1:
        raise GraphError(131009, details="All carousel cards must have the same components.")
