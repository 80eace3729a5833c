"""One normalised event -> the ``ErpInbound`` record the ERP receives. No Kafka here.

* ``InboundMessage`` -> kind MESSAGE, BUTTON_REPLY (interactive ``button_reply``, template quick
  reply ``button``), LIST_REPLY (interactive ``list_reply``), REACTION or FAILED (the message has
  Meta's ``errors``); ``command`` = the SendCommand whose message it answers: ``context.id`` (a
  reply, a button or list answer), or the message reacted to.
* ``StatusEvent`` -> kind STATUS, only for messages a SendCommand of the tenant sent (other
  statuses are not the ERP's); ``command`` found by the wamid ref, else by Meta's echo of
  ``biz_opaque_callback_data`` (``tenant_id/idempotency_key``) when it names this tenant (then
  the command id is looked up with a wait for ``wa.send.results``' end; without an echo, only in
  what was already read).

The sealed ``pii`` is passed on as it is (still sealed with the subject's key). The processor opens
it only to tell a button from a list answer and to find the message a reaction names; a subject
who restricted processing has no content (``pii`` null), so the kind then comes from the type alone.
Events of numbers no tenant claims are skipped (counted): no ERP owns them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from wapipe.messages.erp import CommandLink, ErpInbound, ErpInboundKind
from wapipe.messages.events import InboundMessage, MetaError, StatusEvent
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import SubjectErased, UnsealError

class LinkOf(Protocol):
    """``CommandLinks.get``: (tenant_id, wamid ref) -> its command; ``wait``: read results to the end on a miss."""

    def __call__(self, tenant_id: str, ref: str | None, *, wait: bool = True) -> CommandLink | None: ...



Open = Callable[[Sealed], dict]  # the key ring's open of a Sealed
Ref = Callable[[str], str | None]  # WamidRefs


class Skip(Exception):
    """Not for the ERP: counted under ``outcome``, nothing written."""

    def __init__(self, outcome: str) -> None:
        super().__init__(outcome)
        self.outcome = outcome


class Dead(Exception):
    """This record goes to ``wa.erp.dead`` with ``reason``."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


_BUTTON_TYPES = {"button_reply": "BUTTON_REPLY", "list_reply": "LIST_REPLY"}


def typed(record_name: str, rec: dict) -> InboundMessage | StatusEvent:
    """The decoded ``InboundMessage`` or ``StatusEvent`` as its typed event; ``Dead`` when a field
    the schema requires is absent (a record fastavro decoded always has them all)."""
    cls = InboundMessage if record_name == InboundMessage.RECORD else StatusEvent
    try:
        return cls.from_avro(rec)
    except KeyError as exc:
        raise Dead(f"{exc.args[0]} missing", "MissingField") from None


def _extra(rec: InboundMessage) -> dict:
    try:
        extra = json.loads(rec.extra or "{}")
    except ValueError:
        raise Dead("extra is not JSON", "BadExtra") from None
    if not isinstance(extra, dict):
        raise Dead("extra is not a JSON object", "BadExtra")
    return extra


def _errors(items: Any) -> list[MetaError]:
    if not isinstance(items, list):
        raise Dead("errors is not a list", "BadErrors")
    out = []
    for e in items:
        code = e.get("code") if isinstance(e, dict) else None
        if isinstance(code, bool) or not isinstance(code, int) or not -2**31 <= code < 2**31:
            raise Dead("an error without an integer code", "BadErrors")
        text = lambda k: None if e.get(k) is None else str(e[k])[:2000]  # noqa: E731
        out.append(MetaError(code, text("title"), text("message"), text("details")))
    return out


def _require(rec: InboundMessage | StatusEvent, *names: str) -> None:
    for n in names:
        if not isinstance(getattr(rec, n), str) or not getattr(rec, n):
            raise Dead(f"{n} missing", "MissingField")


def from_inbound(rec: InboundMessage, *, link_of: LinkOf, open_: Open, ref: Ref) -> ErpInbound:
    """The ErpInbound of one ``InboundMessage``."""
    tenant = rec.tenant_id
    if not tenant:
        raise Skip("no_tenant")
    _require(rec, "event_id", "phone_number_id", "waba_id", "message_id", "type")
    extra = _extra(rec)
    mtype = rec.type
    message: dict | None = None
    pii = rec.pii
    if pii is not None:
        try:
            content = open_(pii)
        except SubjectErased:
            raise Skip("erased") from None
        except UnsealError as exc:
            raise Dead(f"sealed content does not open: {exc}", "UnsealError") from None
        message = content.get("message") if isinstance(content, dict) else None
        if not isinstance(message, dict):
            raise Dead("sealed content has no message object", "BadContent")
    errors = _errors(extra.get("errors", []))
    target = rec.context_message_id  # already a ref (the normaliser's)
    kind = "MESSAGE"
    if errors:
        kind = "FAILED"
    elif mtype == "button":
        kind = "BUTTON_REPLY"
    elif mtype == "interactive" and message is not None:
        sub = (message.get("interactive") or {}).get("type") if isinstance(message.get("interactive"), dict) else None
        kind = _BUTTON_TYPES.get(sub, "MESSAGE")
    elif mtype == "reaction":
        kind = "REACTION"
        reaction = (message or {}).get("reaction")
        if isinstance(reaction, dict) and isinstance(reaction.get("message_id"), str):
            target = ref(reaction["message_id"])
    link = link_of(tenant, target) if target else None
    keep = {k: v for k, v in extra.items() if k != "errors"}
    return ErpInbound(event_id=rec.event_id, tenant_id=tenant, kind=ErpInboundKind(kind),
                      phone_number_id=rec.phone_number_id, waba_id=rec.waba_id, subject_id=rec.subject_id,
                      message_ref=rec.message_id, message_type=mtype, command=link, errors=errors,
                      timestamp=rec.timestamp, received_at=rec.received_at, pii=pii,
                      extra=json.dumps(keep, sort_keys=True, ensure_ascii=False))


def from_status(rec: StatusEvent, *, link_of: LinkOf) -> ErpInbound:
    """The ErpInbound of one ``StatusEvent``; ``Skip`` when no command of the tenant sent the message."""
    tenant = rec.tenant_id
    if not tenant:
        raise Skip("no_tenant")
    _require(rec, "event_id", "phone_number_id", "waba_id", "wamid", "status")
    # Every send of the worker carries biz_opaque_callback_data, and Meta echoes it: without an echo
    # naming this tenant, only a result already read links the status (no wait for the topic's end,
    # which would cost a watermark query per status of every message no command sent).
    echo = _echoed(tenant, rec.biz_opaque_callback_data, rec.wamid)
    link = link_of(tenant, rec.wamid, wait=echo is not None) or echo
    if link is None:
        raise Skip("not_a_command")
    return ErpInbound(event_id=rec.event_id, tenant_id=tenant, kind=ErpInboundKind.STATUS,
                      phone_number_id=rec.phone_number_id, waba_id=rec.waba_id, subject_id=rec.subject_id,
                      message_ref=rec.wamid, status=rec.status, command=link,
                      errors=_errors([e.to_avro() for e in rec.errors]),
                      timestamp=rec.timestamp, received_at=rec.received_at, pii=rec.pii)


def _echoed(tenant: str, cb: str | None, ref: str) -> CommandLink | None:
    """Meta echoes ``biz_opaque_callback_data`` = ``tenant_id/idempotency_key`` (the send worker
    sets it): a link without the command id, only when it names this tenant."""
    if not cb:
        return None
    owner, sep, key = cb.partition("/")
    if not sep or owner != tenant or not key:
        return None
    return CommandLink(idempotency_key=key, message_ref=ref)
