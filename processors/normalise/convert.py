"""One raw webhook → many typed events. Pure: no Kafka here, so every variant is testable alone.

* statuses → ``StatusEvent`` on ``wa.status.events`` (key: the wamid's keyed ref)
* inbound messages → ``InboundMessage`` on ``wa.inbound.messages`` (key: phone_number_id)
* every other change (template status, number quality, account updates, fields Meta adds later,
  and ``value.errors`` not tied to one message) → ``AccountEvent`` on ``wa.account.events``
  (key: WABA id), its value kept whole as JSON.
* marketing opt-outs and opt-ins (``user_preferences`` items, failed statuses with error 131050)
  → also ``Suppression`` on ``wa.suppressions`` (key: ``<tenant>/<subject>``; ``preferences.py``).

Each event has a deterministic ``event_id`` (a hash of what identifies it), so the same webhook
delivered twice yields the same ids and the dedup table drops the second copy. Personal data
(recipient and sender numbers, profile names, message content) only ever leaves here inside a
``Sealed`` record made by the caller's ``seal``; records otherwise carry the pseudonymous
``subject_id``. Wamids embed the other party's number: record keys and fields carry only
``wamid_ref(wamid)`` (``wapipe/privacy/wamids.py``), the clear wamid only inside the sealed ``pii``;
account changes that name WhatsApp users become one event per person, sealed. Fields this schema does not name are kept in ``extra`` (statuses) or inside the
sealed message object (inbound, since unknown message fields may be content).

Each status, message, error and change converts on its own (``convert_items``): one that cannot
(a wrong type, a timestamp out of range, a sender id without digits) becomes a ``BadItem`` naming
its path in the webhook, for its own dead letter, and the others go on. A status of a message to a
group (``recipient_type: "group"``) is a group status event: ``recipient_type`` says so, the
group's id is kept in ``extra`` (``group_id``), and no person (subject) is derived from it.

Username users (BSUIDs, ``connectors/meta/bsuid.py``): a person is their number when the item
has one, else their BSUID (else their parent BSUID) — ``subject_of`` derives the subject from
either (``wapipe/privacy/subjects.py``). The BSUIDs, the parent BSUID and the username are personal
data: sealed in ``pii`` beside the number, never in ``extra``. An item that names a number *and*
a BSUID (or parent BSUID) also yields a ``SubjectLink`` on ``wa.subject.links`` (pseudonyms only),
so that access, export and erasure of either reach both (``wapipe/privacy/links.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from confluent_kafka import KafkaException

from connectors.meta.bsuid import is_bsuid
from connectors.meta.webhooks import BadItem, InvalidWebhook, parse_items
from processors.normalise import preferences
from wapipe.messages.events import AccountEvent, InboundMessage, MetaError, StatusEvent, SubjectLink, Suppression
from wapipe.messages.send import Sealed
from wapipe.privacy.errors import PrivacyError
from wapipe.privacy.subjects import digits
from wapipe.privacy.links import link_record
from wapipe.topics import ACCOUNT_EVENTS, INBOUND_MESSAGES, STATUS_EVENTS, SUBJECT_LINKS

# Scope of subjects whose number no tenant claims (yet): they are still pseudonymised.
UNASSIGNED_TENANT = "_unassigned"

# recipient_type stays in extra too (ClickHouse's status_events keeps extra, not the Avro field)
_STATUS_NAMED = {"id", "status", "timestamp", "recipient_id", "biz_opaque_callback_data", "conversation", "pricing",
                 "errors", "recipient_user_id", "recipient_parent_user_id"}


class Unreadable(ValueError):
    """The raw webhook cannot be normalised; ``reason`` goes to the dead-letter record."""

    def __init__(self, reason: str, error_type: str = "Unreadable") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class Tenants(Protocol):
    def tenant_for_number(self, phone_number_id: str) -> Any: ...
    def tenant_for_waba(self, waba_id: str) -> Any: ...


Seal = Callable[[str, str, dict], dict]  # a Sealed Avro dict (KeyRing.seal)
SubjectOf = Callable[[str, str], str]


class BadInput(ValueError):
    """One item of a webhook that cannot become an event (raised inside a conversion)."""


Record = StatusEvent | InboundMessage | AccountEvent | Suppression | SubjectLink


@dataclass(frozen=True, slots=True)
class Event:
    topic: str
    key: str
    record: Record  # written with ``record.to_avro()`` as ``record.RECORD``
    path: str = ""  # where in the webhook it came from (for a dead letter if it cannot be written)

    @property
    def record_name(self) -> str:
        return self.record.RECORD

    @property
    def event_id(self) -> str:
        return self.record.event_id


def event_id(*parts: object) -> str:
    return hashlib.sha256("\x1f".join("" if p is None else str(p) for p in parts).encode()).hexdigest()


def _ms(ts: int | None) -> dt.datetime | None:
    # the webhook models bound timestamps to what a datetime holds (connectors/meta/webhooks.py)
    return None if ts is None else dt.datetime.fromtimestamp(int(ts), dt.timezone.utc)


def _person(wa_id: str, what: str) -> str:
    if not digits(wa_id):
        raise BadInput(f"{what} has no digits: not a WhatsApp id")
    return wa_id


@dataclass(frozen=True)
class Who:
    """One person as an item names them: number, BSUID, parent BSUID (any may be missing)."""

    phone: str | None
    user_id: str | None
    parent_user_id: str | None

    @property
    def primary(self) -> str | None:
        """What their subject is derived from: the number first (the subject they always had),
        else the BSUID, else the parent BSUID."""
        return self.phone or self.user_id or self.parent_user_id

    def others(self) -> list[str]:
        """The ids besides the primary one, to link to it."""
        return [i for i in (self.user_id, self.parent_user_id) if i and i != self.primary]


@dataclass
class Converted:
    """A webhook's events, and the items of it that could not be converted."""

    events: list[Event]
    bad: list[BadItem]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _dump(model: Any) -> Any:
    if hasattr(model, "model_dump"):
        return model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return model


@dataclass
class Normaliser:
    tenants: Tenants
    seal: Seal
    subject_of: SubjectOf  # (tenant scope, wa_id) -> subject_id
    # (tenant scope, subject_id) -> True when the person asked to restrict processing: their
    # inbound content is then not stored (the event keeps its metadata, pii = null).
    restricted: Callable[[str, str], bool] | None = None
    # wamid -> its keyed ref (wapipe.privacy.wamids.WamidRefs); required to convert statuses and
    # inbound messages, so that no wamid is ever published in clear (issue 18).
    wamid_ref: Callable[[str], str] | None = None

    def _ref(self, wamid: str | None) -> str | None:
        if not wamid:
            return wamid
        if self.wamid_ref is None:
            raise RuntimeError("Normaliser.wamid_ref is not configured: wamids are never published in clear")
        return self.wamid_ref(wamid)

    def convert(self, raw: dict) -> list[Event]:
        """All of the webhook's events, or ``Unreadable`` (the first bad item's path and reason)."""
        done = self.convert_items(raw)
        if done.bad:
            first = done.bad[0]
            raise Unreadable(f"{first.path}: {first.reason}", "InvalidWebhook")
        return done.events

    def convert_items(self, raw: dict) -> Converted:
        """``raw`` is a decoded ``RawWebhook``: its events and its bad items. Raises ``Unreadable``
        when the webhook as a whole cannot be read (not verified, not JSON, not an envelope)."""
        if not raw.get("signature_verified", False):
            raise Unreadable("signature not verified by the ingress", "Unverified")
        try:
            items = parse_items(raw["body"])
        except InvalidWebhook as exc:
            raise Unreadable(exc.reason, "InvalidWebhook") from None
        if items.object != "whatsapp_business_account":
            raise Unreadable(f"object {items.object[:100]!r} is not whatsapp_business_account", "InvalidWebhook")
        received = raw["received_at"]
        bad = list(items.bad)
        events: list[Event] = []

        def each(pairs, convert) -> None:
            for path, item in pairs:
                try:
                    got = convert(item, path)  # one event, or several (per person; with suppressions)
                    for e in got if isinstance(got, list) else [got]:
                        (bad if isinstance(e, BadItem) else events).append(e)  # a bad part of the item
                except (PrivacyError, KafkaException):
                    raise  # infrastructure (sealing publishes keys): the caller retries the batch
                except Exception as exc:  # this item only: its own dead letter, the others go on
                    reason = str(exc)[:300] if isinstance(exc, BadInput) else f"{type(exc).__name__}: {str(exc)[:300]}"
                    bad.append(BadItem(path, reason, _dump(item[2])))

        each(items.statuses, lambda it, path: self._status(*it, received, path))
        each(items.messages, lambda it, path: self._message(*it, received, path))
        times = items.entry_times
        each(items.others, lambda it, path: self._other(*it, times.get(it[0]), received, path))
        each(items.errors, lambda it, path: self._error(*it, times.get(it[0]), received, path))
        return Converted(_one_link_each(events), bad)

    # --- tenants and subjects -------------------------------------------------------------
    def _links(self, scope: str, subject: str, who: Who, received: dt.datetime, path: str) -> list[Event]:
        """A ``SubjectLink`` for each id of ``who`` besides the one ``subject`` comes from."""
        out = []
        for other in who.others():
            link = link_record(scope, subject, self.subject_of(scope, other), received)
            out.append(Event(SUBJECT_LINKS, link.key, link, path))
        return out

    def _sealed(self, scope: str, subject: str, data: dict) -> Sealed:
        return Sealed.from_avro(self.seal(scope, subject, data))

    def _tenant(self, phone_number_id: str | None, waba_id: str) -> str | None:
        t = self.tenants.tenant_for_number(phone_number_id) if phone_number_id else None
        if t is None and waba_id:
            t = self.tenants.tenant_for_waba(waba_id)
        return t.tenant_id if t is not None else None

    # --- statuses ---------------------------------------------------------------------------
    def _status(self, waba_id: str, md: Any, st: Any, received: dt.datetime, path: str) -> list[Event]:
        pnid = md.phone_number_id
        tenant = self._tenant(pnid, waba_id)
        scope = tenant or UNASSIGNED_TENANT
        subject: str | None = None
        pii: Sealed | None = None
        links: list[Event] = []
        ref = self._ref(st.id)
        extra = {k: v for k, v in _dump(st).items() if k not in _STATUS_NAMED}
        if st.is_group:  # a group's id is not a person: no subject, kept as the group's id
            if st.recipient_id:
                extra["group_id"] = st.recipient_id
        else:
            who = Who(_person(st.recipient_id, "recipient_id") if st.recipient_id else None,
                      st.recipient_user_id, st.recipient_parent_user_id)
            if who.primary:
                subject = self.subject_of(scope, who.primary)
                sealed = {"recipient_id": st.recipient_id, "wamid": st.id}
                if st.recipient_user_id:
                    sealed["recipient_user_id"] = st.recipient_user_id
                if st.recipient_parent_user_id:
                    sealed["recipient_parent_user_id"] = st.recipient_parent_user_id
                pii = self._sealed(scope, subject, sealed)
                links = self._links(scope, subject, who, received, path)
        conv, pricing = st.conversation, st.pricing
        if conv is not None and conv.model_extra:
            extra["conversation"] = conv.model_extra
        if pricing is not None and pricing.model_extra:
            extra["pricing"] = pricing.model_extra
        rec = StatusEvent(
            event_id=event_id("status", pnid, st.id, st.status),
            tenant_id=tenant,
            waba_id=waba_id,
            phone_number_id=pnid,
            wamid=ref,
            status=st.status,
            timestamp=_ms(st.timestamp) or received,
            subject_id=subject,
            pii=pii,
            biz_opaque_callback_data=st.biz_opaque_callback_data,
            conversation_id=conv.id if conv else None,
            conversation_origin=conv.origin.type if conv and conv.origin else None,
            conversation_expires_at=_ms(conv.expiration_timestamp) if conv else None,
            pricing_billable=pricing.billable if pricing else None,
            pricing_model=pricing.pricing_model if pricing else None,
            pricing_category=pricing.category if pricing else None,
            pricing_type=pricing.type if pricing else None,
            errors=[MetaError(e.code, e.title, e.message, e.details) for e in st.errors],
            received_at=received,
            extra=_canonical(extra),
            recipient_type=st.recipient_type,
        )
        status = Event(STATUS_EVENTS, ref, rec, path)
        optout = preferences.from_failed_status(  # error 131050: the user stopped marketing messages
            tenant_id=tenant, subject_id=subject, status=st.status, error_codes=[e.code for e in st.errors],
            wamid_ref=ref, at=rec.timestamp, received=received, phone_number_id=pnid)
        if optout is not None:
            links.append(Event(preferences.TOPIC, optout.key, optout, path))
        return [status, *links]

    # --- inbound messages -----------------------------------------------------------------
    def _message(self, waba_id: str, md: Any, msg: Any, contact: Any, received: dt.datetime,
                 path: str) -> list[Event]:
        pnid = md.phone_number_id
        tenant = self._tenant(pnid, waba_id)
        scope = tenant or UNASSIGNED_TENANT
        who = Who(_person(msg.from_, "from") if msg.from_ else None,
                  msg.from_user_id or (contact.user_id if contact else None),
                  msg.from_parent_user_id or (contact.parent_user_id if contact else None))
        subject = self.subject_of(scope, who.primary)  # the model requires from or from_user_id
        message = _dump(msg)
        profile = contact.profile.name if contact and contact.profile else None
        extra: dict[str, Any] = {}
        if self.restricted is not None and self.restricted(scope, subject):
            pii = None
            extra["content"] = "not stored: processing restricted by the data subject"
        else:
            sealed = {"from": msg.from_, "profile_name": profile, "message": message}
            for k, v in (("from_user_id", who.user_id), ("from_parent_user_id", who.parent_user_id),
                         ("username", contact.profile.username if contact and contact.profile else None)):
                if v:
                    sealed[k] = v
            pii = self._sealed(scope, subject, sealed)
        if msg.errors:
            extra["errors"] = [{"code": e.code, "title": e.title, "message": e.message, "details": e.details}
                               for e in msg.errors]
        if msg.context is not None and (msg.context.forwarded or msg.context.frequently_forwarded):
            extra["forwarded"] = True
        rec = InboundMessage(
            event_id=event_id("inbound", pnid, msg.id),
            tenant_id=tenant,
            waba_id=waba_id,
            phone_number_id=pnid,
            message_id=self._ref(msg.id),
            type=msg.type,
            timestamp=_ms(msg.timestamp) or received,
            subject_id=subject,
            pii=pii,
            context_message_id=self._ref(msg.context.id) if msg.context else None,
            received_at=received,
            extra=_canonical(extra),
        )
        return [Event(INBOUND_MESSAGES, pnid, rec, path),
                *self._links(scope, subject, who, received, path)]

    # --- everything else --------------------------------------------------------------------
    def _other(self, waba_id: str, field_name: str, value: Any, entry_time: int | None, received: dt.datetime,
               path: str) -> Event | list:
        body = _dump(value)
        event = body.get("event") if isinstance(body, dict) else None
        pnid = None
        if isinstance(body, dict):
            pnid = body.get("phone_number_id")
            if not pnid and isinstance(body.get("metadata"), dict):
                pnid = body["metadata"].get("phone_number_id")
            if isinstance(pnid, dict | list):
                raise BadInput("phone_number_id is not a string")
        personal = self._personal(waba_id, pnid, field_name, event, body, entry_time, received, path)
        kept = personal if personal is not None else [
            self._account(waba_id, pnid, field_name, event, body, entry_time, received, path)]
        if field_name == preferences.FIELD:  # marketing opt-out / opt-in: also wa.suppressions
            return kept + self._suppressions(waba_id, pnid, body, received, path)
        return kept if personal is not None else kept[0]

    def _suppressions(self, waba_id: str, pnid: str | None, body: Any, received: dt.datetime,
                      path: str) -> list[Event | BadItem]:
        tenant = self._tenant(str(pnid) if pnid else None, waba_id)
        found, bad = preferences.from_user_preferences(body, path, tenant_id=tenant, phone_number_id=pnid,
                                                       subject_of=self.subject_of, received=received)
        return [Event(preferences.TOPIC, s.key, s, path) for s in found] + bad

    def _error(self, waba_id: str, md: Any, err: Any, entry_time: int | None, received: dt.datetime,
               path: str) -> Event:
        return self._account(waba_id, md.phone_number_id, "messages.errors", str(err.code), _dump(err),
                             entry_time, received, path)

    def _account(self, waba_id: str, pnid: str | None, field_name: str, event: Any, body: Any,
                 entry_time: int | None, received: dt.datetime, path: str = "") -> Event:
        value = _canonical(_wamids_to_refs(body, self._ref))
        rec = AccountEvent(
            event_id=event_id("account", waba_id, field_name, entry_time, value),
            tenant_id=self._tenant(str(pnid) if pnid else None, waba_id),
            waba_id=waba_id,
            phone_number_id=str(pnid) if pnid else None,
            field=field_name,
            event=None if event is None else str(event),
            value=value,
            timestamp=_ms(entry_time),
            received_at=received,
        )
        return Event(ACCOUNT_EVENTS, waba_id, rec, path)

    def _personal(self, waba_id: str, pnid: str | None, field_name: str, event: Any, body: Any,
                  entry_time: int | None, received: dt.datetime, path: str = "") -> list[Event] | None:
        """A change that names WhatsApp users (``wa_id``, ``from``/``to``, ``recipient_id`` or
        ``phone_number``, outside the business's ``metadata``): one event per person, their part of the
        value (list items about others dropped) sealed with their key, ``value`` redacted to the
        business metadata. None when the change names nobody, or is about the business (kept whole)."""
        if not isinstance(body, dict) or field_name in _BUSINESS_FIELDS:
            return None
        business = _digits_of((body.get("metadata") or {}).get("display_phone_number")
                              if isinstance(body.get("metadata"), dict) else None)
        people = sorted(_people(body, business))
        if not people:
            return None
        tenant = self._tenant(str(pnid) if pnid else None, waba_id)
        scope = tenant or UNASSIGNED_TENANT
        whole = _canonical(body)
        redacted = _canonical({k: body[k] for k in ("messaging_product", "metadata") if k in body}
                              | {"personal_data": "sealed in pii, one event per person"})
        out = []
        for person in people:
            subject = self.subject_of(scope, person)
            mine = _only(body, person, business)
            if self.restricted is not None and self.restricted(scope, subject):
                pii = None
            else:
                pii = self._sealed(scope, subject, {"field": field_name, "value": mine})
            rec = AccountEvent(
                event_id=event_id("account", waba_id, field_name, entry_time, whole, subject),
                tenant_id=tenant,
                waba_id=waba_id,
                phone_number_id=str(pnid) if pnid else None,
                field=field_name,
                event=None if event is None else str(event),
                value=redacted,
                timestamp=_ms(entry_time),
                received_at=received,
                subject_id=subject,
                pii=pii,
            )
            out.append(Event(ACCOUNT_EVENTS, waba_id, rec, path))
        return out


def _one_link_each(events: list[Event]) -> list[Event]:
    """The same person's link shows in several items of one webhook (a status and a message): once."""
    seen: set[str] = set()
    out = []
    for e in events:
        if e.topic == SUBJECT_LINKS:
            if e.event_id in seen:
                continue
            seen.add(e.event_id)
        out.append(e)
    return out


# Changes about the business itself (its templates, numbers, account, limits): kept whole, even
# where they name the business's own number (``account_update`` has ``phone_number``). Every other
# field, including those Meta adds later, is examined for people.
_BUSINESS_FIELDS = frozenset({
    "message_template_status_update", "message_template_quality_update", "message_template_components_update",
    "template_category_update", "phone_number_quality_update", "phone_number_name_update", "account_update",
    "account_review_update", "account_alerts", "business_capability_update", "business_status_update", "security",
})

# Keys whose value identifies a WhatsApp user in a webhook change (outside ``metadata``, which
# describes the business's own number); the BSUID keys name them by business-scoped user id.
_PERSON_KEYS = frozenset({"wa_id", "from", "to", "recipient_id", "phone_number"})
_BSUID_KEYS = frozenset({"user_id", "parent_user_id", "from_user_id", "from_parent_user_id", "recipient_user_id",
                         "recipient_parent_user_id"})


def _digits_of(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit()) if value is not None else ""


def _people(obj: Any, business: str) -> set[str]:
    """The WhatsApp ids ``obj`` names (numbers as digits, BSUIDs as sent)."""
    found: set[str] = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "metadata":
                continue
            if k in _BSUID_KEYS and is_bsuid(v):
                found.add(v)
            elif k in _PERSON_KEYS and isinstance(v, (str, int)):
                d = _digits_of(v)
                if len(d) >= 6 and d != business:
                    found.add(d)
            else:
                found |= _people(v, business)
    elif isinstance(obj, list):
        for v in obj:
            found |= _people(v, business)
    return found


def _only(obj: Any, person: str, business: str) -> Any:
    """``obj`` with every list item that names someone else (and not ``person``) left out."""
    if isinstance(obj, dict):
        return {k: _only(v, person, business) for k, v in obj.items()}
    if isinstance(obj, list):
        kept = []
        for v in obj:
            named = _people(v, business)
            if not named or person in named:
                kept.append(_only(v, person, business))
        return kept
    return obj


def _wamids_to_refs(obj: Any, ref: Callable[[str], Any]) -> Any:
    """``obj`` with every wamid string replaced by its keyed ref."""
    if isinstance(obj, dict):
        return {k: _wamids_to_refs(v, ref) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_wamids_to_refs(v, ref) for v in obj]
    if isinstance(obj, str) and obj.startswith("wamid."):
        return ref(obj)
    return obj
