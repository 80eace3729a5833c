"""The simulated Cloud API's behaviour, independent of HTTP: authorisation, the send decision
(validation, templates, limits, windows, tier budget), status webhooks with Meta's habits, inbound
messages, template/number/business changes, signup codes and fault selection.

``graph.py`` and ``control.py`` are thin HTTP layers over one ``Sandbox`` instance.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from connectors.meta.sandbox.graph_errors import THROTTLING, GraphError, status_error, unknown_object
from connectors.meta.sandbox.media import Media, MediaStore
from connectors.meta.sandbox.limits import PairBuckets, ServiceWindows, SlidingWindow, TierBudget
from connectors.meta.sandbox.models import (TIERS, BusinessChange, Faults, InboundRequest, NumberChange,
                                            SandboxConfig, Seed, SignupCodeRequest, TemplateStatusChange,
                                            UserPreferenceRequest)
from connectors.meta.sandbox.state import Counters, Number, SignupCode, Template, Token, Waba, World
from connectors.meta.sandbox.validate import parse_send
from connectors.meta.sandbox.webhooks import WebhookDispatcher

# The user stopped marketing messages from this business (Meta reports it in a failed status).
OPTED_OUT_OF_MARKETING = 131050
_VERSION = re.compile(r"^v(\d+)\.\d+$")
_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_]+)\s*\}\}")


def version_major(version: str) -> int:
    m = _VERSION.match(version)
    if not m:
        raise GraphError(2500, http_status=400, message=f"Unknown path components: /{version}",
                         type="OAuthException")
    return int(m.group(1))


def new_wamid(wa_id: str) -> str:
    raw = (b"\x1c\x18" + bytes([len(wa_id)]) + wa_id.encode() + b"\x15\x02\x00\x11\x18\x12"
           + secrets.token_hex(9).upper().encode() + b"\x00")
    return "wamid." + base64.b64encode(raw).decode()


@dataclass(slots=True)
class Accepted:
    wamid: str
    wa_id: str | None  # None for a send by BSUID only
    to: str  # what the request named the recipient by (contacts[].input)
    message_status: str = "accepted"
    user_id: str | None = None  # the BSUID of a send by BSUID (contacts[].user_id)

    def contact(self) -> dict:
        """Meta's ``contacts[0]`` of the answer: ``wa_id`` for a send by number, ``user_id`` for one
        by BSUID."""
        return {"input": self.to, **({"wa_id": self.wa_id} if self.wa_id else {"user_id": self.user_id})}


class Sandbox:
    def __init__(self, seed: Seed | None = None) -> None:
        self.config = SandboxConfig()
        self.world = World()
        self.counters = Counters()
        self.rng = random.Random()
        self.faults = Faults()
        lim = self.config.limits
        self.pairs = PairBuckets(lim.pair_interval_s, lim.pair_burst)
        self.tier = TierBudget(lim.tier_window_s)
        self.windows = ServiceWindows(lim.service_window_s)
        self.dispatcher = WebhookDispatcher(self.world, lambda: self.config, self.counters)
        self._conversations: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._management: dict[tuple[str, str], SlidingWindow] = {}
        self.media = MediaStore()
        if seed is not None:
            self.load(seed)

    # --- configuration ---------------------------------------------------------------------
    def load(self, seed: Seed) -> None:
        if seed.config is not None:
            self.set_config(seed.config)
        self.world.apply(seed, self.config.limits.throughput_window_s)

    def set_config(self, cfg: SandboxConfig) -> None:
        """Replace the configuration; limit state (windows, buckets, budgets) is kept."""
        self.config = cfg
        lim = cfg.limits
        self.pairs.interval, self.pairs.burst = lim.pair_interval_s, lim.pair_burst
        self.tier.window = lim.tier_window_s
        self.windows.window = lim.service_window_s
        for n in self.world.numbers.values():
            n.admitted.window = lim.throughput_window_s
        if cfg.random_seed is not None:
            self.rng.seed(cfg.random_seed)

    def patch_config(self, patch: dict) -> SandboxConfig:
        merged = _deep_merge(self.config.model_dump(), patch)
        self.set_config(SandboxConfig.model_validate(merged))
        return self.config

    # --- authorisation ---------------------------------------------------------------------
    def auth(self, token: str | None) -> Token:
        t = self.world.tokens.get(token or "")
        if t is None:
            raise GraphError(190)
        if not t.valid:
            raise GraphError(190, subcode=463,
                             message="Error validating access token: Session has expired or the token was revoked.")
        return t

    def number_for(self, token: Token, number_id: str, manage: bool = False) -> Number:
        n = self.world.numbers.get(number_id)
        if n is None or not token.may_use(n.waba_id):
            raise unknown_object(number_id)
        if manage:
            self._management_call(token, n.waba_id)
        return n

    def waba_for(self, token: Token, waba_id: str, manage: bool = False) -> Waba:
        w = self.world.wabas.get(waba_id)
        if w is None or not token.may_use(waba_id):
            raise unknown_object(waba_id)
        if manage:
            self._management_call(token, waba_id)
        return w

    def _management_call(self, token: Token, waba_id: str) -> None:
        """Business Management API rate limit per (app, WABA) → 80007 (off unless configured)."""
        lim = self.config.limits
        if lim.management_calls_per_hour is None:
            return
        key = (token.app_id or token.token, waba_id)
        w = self._management.get(key)
        if w is None:
            w = self._management[key] = SlidingWindow(lim.management_window_s)
        w.window = lim.management_window_s
        now = time.monotonic()
        if w.count(now) >= lim.management_calls_per_hour:
            raise self.throttle(GraphError(80007, details=(
                "There have been too many calls to this WhatsApp Business account. Wait a bit and try again.")))
        w.add(now)

    def throttle(self, err: GraphError) -> GraphError:
        """Meta answers throttling with 400 or 429, inconsistently."""
        if err.code in THROTTLING and self.rng.random() < self.config.limits.throttle_429_ratio:
            err.http_status = 429
        return err

    # --- faults ------------------------------------------------------------------------------
    def set_faults(self, faults: Faults) -> None:
        self.faults = faults

    def pick_fault(self, number_id: str) -> str | None:
        f = self.faults
        if f.phone_number_id is not None and f.phone_number_id != number_id:
            return None
        for kind in ("error", "timeout", "reset"):
            count = getattr(f, f"{kind}_count")
            if count > 0:
                setattr(f, f"{kind}_count", count - 1)
                self.counters.faults[kind] += 1
                return kind
            p = getattr(f, f"{kind}_p")
            if p > 0 and self.rng.random() < p:
                self.counters.faults[kind] += 1
                return kind
        return None

    def fault_error(self) -> GraphError:
        code = self.faults.error_code
        return GraphError(code, details="Injected by the sandbox" if code == 131000 else None)

    # --- sending -----------------------------------------------------------------------------
    def count_rejected(self, number: Number, err: GraphError) -> GraphError:
        """A send refused before it reached the send logic (an injected 5xx): still a request."""
        nc = self.counters.number(number.id)
        nc.requests += 1
        nc.requests_window.add(time.monotonic())
        nc.rejected[err.code] += 1
        return err

    def send(self, number: Number, body: object, raw: bytes, version: int) -> Accepted:
        now = time.monotonic()
        nc = self.counters.number(number.id)
        nc.requests += 1
        nc.requests_window.add(now)
        try:
            return self._send(number, body, raw, version, now)
        except GraphError as e:
            nc.rejected[e.code] += 1
            raise

    def _person(self, wa_id: str | None, user_id: str | None) -> str:
        """The key of a user's per-recipient state (window, pair rate, tier): their number when the
        sandbox knows it, else their BSUID (a username user)."""
        return wa_id or self.world.users.get(user_id or "") or user_id or ""

    def _recipient(self, req: Any) -> dict:
        """A status's recipient fields: ``recipient_id`` (and the user's ``recipient_user_id`` when
        known) for a send by number; ``recipient_user_id`` alone for a send by BSUID."""
        if req.wa_id:
            bsuid = self.world.bsuid_of.get(req.wa_id)
            return {"recipient_id": req.wa_id, **({"recipient_user_id": bsuid} if bsuid else {})}
        return {"recipient_user_id": req.user_id}

    def _send(self, number: Number, body: object, raw: bytes, version: int, now: float) -> Accepted:
        req = parse_send(body)
        assert isinstance(body, dict)
        person = self._person(req.wa_id, req.user_id)
        cb = body.get("biz_opaque_callback_data")
        if cb is not None and (not isinstance(cb, str) or len(cb) > 512):
            raise GraphError(100, message="(#100) Param biz_opaque_callback_data must be at most 512 characters long.")
        if not number.registered:
            raise GraphError(133010, details="The phone number is not registered on the Cloud API.")
        template: Template | None = None
        if req.template is not None:
            name, lang = req.template
            template = self.world.templates.get((number.waba_id, name, lang))
            if template is None or template.status not in ("APPROVED", "PAUSED", "DISABLED"):
                raise GraphError(132001, details=f"template name ({name}) does not exist in {lang}")
            if template.status == "PAUSED":
                raise GraphError(132015, details=f"Template {name} is paused due to low quality.")
            if template.status == "DISABLED":
                raise GraphError(132016, details=f"Template {name} has been disabled.")
            if req.user_id and template.category == "AUTHENTICATION":
                raise GraphError(131062, details="Business-scoped User ID recipients are not supported for this message.")
            if req.body_params != template.body_params:
                raise GraphError(132000, details=(f"body: number of localizable_params ({req.body_params}) does not "
                                                  f"match the expected number of params ({template.body_params})"))
        if number.admitted.count(now) >= number.throughput:
            raise self.throttle(GraphError(130429, details="Cloud API message throughput has been reached."))
        if not self.pairs.take(number.id, person, now):
            raise self.throttle(GraphError(131056, details=(
                "Message failed to send because there were too many messages sent from this phone number to the "
                "same phone number in a short period of time.")))

        lim = self.config.limits
        fail: int | None = None
        window_open = self.windows.is_open(number.id, person, now)
        if template is None and not window_open:
            if lim.window_mode == "reject":
                raise GraphError(131047, details=(
                    "Message failed to send because more than 24 hours have passed since the customer last "
                    "replied to this number."))
            fail = 131047
        elif template is not None and not window_open:
            business = self.world.business_of(number)
            if not self.tier.admit(business.id, person, business.limit, now):
                if lim.tier_mode == "reject":
                    raise GraphError(lim.tier_error_code, details="Messaging limit reached for this business portfolio.")
                fail = lim.tier_error_code
        if fail is None and ({person, req.user_id} & self.world.invalid_recipients):
            fail = 131026
        if (fail is None and template is not None and template.category == "MARKETING"
                and (number.waba_id, req.wa_id) in self.world.marketing_opt_outs):
            fail = OPTED_OUT_OF_MARKETING  # accepted, then a failed status (as Meta reports it)

        number.admitted.add(now)
        self.counters.numbers[number.id].accept(now, time.time())
        wamid = new_wamid(req.wa_id or req.user_id or "")
        if cb is not None:
            self.counters.by_callback[cb] += 1
        self.counters.by_payload[hashlib.blake2b(raw, digest_size=8).hexdigest()] += 1
        if fail is not None:
            self.counters.failed_async[fail] += 1
        if self.config.record_messages:
            self.counters.messages.append({
                "wamid": wamid, "phone_number_id": number.id, "to": req.to, "wa_id": req.wa_id,
                "user_id": req.user_id, "type": req.type,
                "template": req.template[0] if req.template else None, "biz_opaque_callback_data": cb,
                "idempotency_key": cb, "at": time.time(), "failed_with": fail})
        if self.world.apps_for(number.waba_id):
            category = template.category.lower() if template is not None else "service"
            self._schedule_statuses(number, wamid, person, cb, category, fail, version, self._recipient(req))
        held = self.config.habits.held_for_quality
        if held and template is not None and template.category == "MARKETING" and self.rng.random() < held:
            return Accepted(wamid, req.wa_id, req.input, "held_for_quality_assessment", req.user_id)
        return Accepted(wamid, req.wa_id, req.input, user_id=req.user_id)

    def _schedule_statuses(self, number: Number, wamid: str, wa_id: str, cb: str | None, category: str,
                           fail: int | None, version: int, recipient: dict | None = None) -> None:
        pol, habits, rng = self.config.webhooks, self.config.habits, self.rng
        wall = time.time()
        sent_at = pol.sent_after.sample_s(rng)
        base = {"id": wamid, **(recipient or {"recipient_id": wa_id})}
        if cb is not None:
            base["biz_opaque_callback_data"] = cb
        if fail is not None:
            details = {131026: "Message undeliverable: the recipient cannot receive this message.",
                       OPTED_OUT_OF_MARKETING: "Unable to deliver the message. This recipient has chosen to stop "
                                               "receiving marketing messages on WhatsApp from your business.",
                       131047: "Message failed to send because more than 24 hours have passed since the customer "
                               "last replied to this number."}.get(fail, "Message was not delivered.")
            item = {**base, "status": "failed", "timestamp": str(int(wall + sent_at)),
                    "errors": [status_error(fail, details)]}
            self._emit_status(number, item, sent_at)
            return
        steps: list[tuple[str, float]] = [("sent", sent_at)]
        delivered_at = sent_at + pol.delivered_after.sample_s(rng)
        read = rng.random() < habits.read
        skip = read and rng.random() < habits.skip_delivered
        if not skip:
            steps.append(("delivered", delivered_at))
        if read:
            steps.append(("read", delivered_at + pol.read_after.sample_s(rng)))
        # Delivery times: normally the event times; out-of-order swaps the first and last.
        due = [t for _, t in steps]
        if len(due) > 1 and rng.random() < habits.out_of_order:
            due[0], due[-1] = due[-1], due[0]
        conv = self._conversation(number.id, wa_id, category, wall)
        billable = category != "service"
        for (name, event_t), deliver_t in zip(steps, due):
            item = {**base, "status": name, "timestamp": str(int(wall + event_t))}
            if name != "read":
                if version < 24:
                    item["conversation"] = {"id": conv[0], "expiration_timestamp": str(conv[1]),
                                            "origin": {"type": category}}
                item["pricing"] = {"billable": billable, "pricing_model": "PMP",
                                   "type": "regular" if billable else "free_customer_service", "category": category}
            self._emit_status(number, item, deliver_t)
            if habits.duplicate and rng.random() < habits.duplicate:
                self._emit_status(number, dict(item), deliver_t + pol.duplicate_after.sample_s(rng))

    def _emit_status(self, number: Number, item: dict, delay: float) -> None:
        self.counters.webhooks.statuses[item["status"]] += 1
        self.dispatcher.schedule(delay, number.waba_id, "messages", {"status": item}, number.id)

    def _conversation(self, number_id: str, wa_id: str, category: str, wall: float) -> tuple[str, int]:
        key = (number_id, wa_id, category)
        conv = self._conversations.get(key)
        if conv is None or conv[1] <= wall:
            conv = (secrets.token_hex(16), int(wall + 24 * 3600))
            self._conversations[key] = conv
        return conv

    def mark_read(self, number: Number, body: dict) -> None:
        if body.get("messaging_product") != "whatsapp":
            raise GraphError(100, message="(#100) The parameter messaging_product is required.")
        mid = body.get("message_id")
        if not mid:
            raise GraphError(100, message="(#100) The parameter message_id is required.")
        # Meta, "Mark messages as read" (updated 2026-10-15): an invalid message id is 131009; marking
        # one also marks the earlier messages of the conversation read. No webhook follows.
        got = self.world.inbound_to.get(mid) if isinstance(mid, str) else None
        if got is None or got[0] != number.id:  # another number's message is as unknown as a made-up id
            raise GraphError(131009, details=f"message_id {mid} is not a message this number received")
        typing = body.get("typing_indicator")
        if typing is not None and typing != {"type": "text"}:
            raise GraphError(131009, details='typing_indicator must be {"type": "text"}')
        marks = []
        for wamid, owner in self.world.inbound_to.items():  # in arrival order, up to this one
            if owner == got and wamid not in self.world.read_ids:
                marks.append(wamid)
            if wamid == mid:
                break
        self.world.read_ids.update(marks)
        self.world.read_marked.append(mid)
        self.world.reads.append({"message_id": mid, "phone_number_id": number.id, "wa_id": got[1],
                                 "typing_indicator": typing is not None, "marks": marks, "at": time.time()})

    # --- inbound, changes --------------------------------------------------------------------
    def inbound(self, req: InboundRequest) -> str:
        number = self.world.numbers.get(req.phone_number_id)
        if number is None:
            raise KeyError(f"unknown phone number {req.phone_number_id}")
        wa_id = re.sub(r"\D", "", req.wa_id) if req.wa_id else None
        if req.user_id:  # a user with a BSUID; a username user's number stays withheld
            if wa_id:
                self.world.users[req.user_id] = wa_id
                self.world.bsuid_of[wa_id] = req.user_id
            else:
                self.world.users.setdefault(req.user_id, None)
        person = self._person(wa_id, req.user_id)
        wamid = new_wamid(wa_id or req.user_id or "")
        sender = {k: v for k, v in (("from", wa_id), ("from_user_id", req.user_id),
                                    ("from_parent_user_id", req.parent_user_id)) if v}
        msg: dict = {**sender, "id": wamid, "timestamp": str(int(time.time())), "type": req.type}
        if req.media is not None:
            # The user's file: a media id of this number the business can GET and download.
            m = self.add_media(number, req.media.mime_type, decode_b64(req.media.content_b64))
            obj = {"mime_type": m.mime_type, "sha256": m.sha256_b64, "id": m.id}
            obj.update({k: v for k, v in (("caption", req.media.caption), ("filename", req.media.filename)) if v})
            msg[req.type] = obj
        if req.message is not None:
            msg.update(req.message)
        elif req.type == "text":
            msg["text"] = {"body": req.text or ""}
        if req.context_id:
            msg["context"] = {"from": number.display_phone_number, "id": req.context_id}
        self.world.inbound_ids.add(wamid)
        self.world.inbound_to[wamid] = (number.id, person)
        now = time.monotonic()
        self.windows.open(number.id, person, now)
        if self.config.limits.inbound_counts:
            number.admitted.add(now)
        profile = {"name": req.name, **({"username": req.username} if req.username else {})}
        contact = {"profile": profile, **{k: v for k, v in (("wa_id", wa_id), ("user_id", req.user_id),
                                                            ("parent_user_id", req.parent_user_id)) if v}}
        item = {"contact": contact, "message": msg}
        self.dispatcher.schedule(0.0, number.waba_id, "messages", item, number.id)
        return wamid

    def user_preference(self, req: UserPreferenceRequest) -> dict:
        """The user stops or resumes marketing messages from the number's business: from now on
        MARKETING templates to them fail with 131050 (or go again), and the signed
        ``user_preferences`` webhook goes to the WABA's apps (Meta's payload, docs/meta-api.md)."""
        number = self.world.numbers.get(req.phone_number_id)
        if number is None:
            raise KeyError(f"unknown phone number {req.phone_number_id}")
        wa_id = re.sub(r"\D", "", req.wa_id)
        if not wa_id:
            raise ValueError("wa_id needs digits")
        who = (number.waba_id, wa_id)
        if req.value == "stop":
            self.world.marketing_opt_outs.add(who)
        else:
            self.world.marketing_opt_outs.discard(who)
        contact: dict = {"wa_id": wa_id}
        if req.name:
            contact["profile"] = {"name": req.name}
        value = {"messaging_product": "whatsapp",
                 "metadata": {"display_phone_number": number.display_phone_number, "phone_number_id": number.id},
                 "contacts": [contact],
                 "user_preferences": [{"wa_id": wa_id, "detail": f"User requested to {req.value} marketing messages",
                                       "category": "marketing_messages", "value": req.value,
                                       "timestamp": int(time.time())}]}
        self.counters.webhooks.user_preferences[req.value] += 1
        self.dispatcher.schedule(0.0, number.waba_id, "user_preferences", value, number.id)
        return {"phone_number_id": number.id, "wa_id": wa_id, "value": req.value,
                "opted_out": who in self.world.marketing_opt_outs}

    # --- media -------------------------------------------------------------------------------
    def add_media(self, number: Number, mime_type: str, content: bytes) -> Media:
        return self.media.add(number.waba_id, number.id, mime_type, content, self.config.media_ttl_s)

    def change_template(self, waba_id: str, name: str, language: str, change: TemplateStatusChange) -> Template:
        t = self.world.templates.get((waba_id, name, language))
        if t is None:
            raise KeyError(f"unknown template {waba_id}/{name}/{language}")
        self._set_template_status(t, change.status, change.reason)
        return t

    def _set_template_status(self, t: Template, status: str, reason: str | None) -> None:
        t.status = status
        self.dispatcher.schedule(0.0, t.waba_id, "message_template_status_update", {
            "event": status, "message_template_id": int(t.id) if t.id.isdigit() else t.id,
            "message_template_name": t.name, "message_template_language": t.language,
            "reason": reason or "NONE"})

    def change_number(self, number_id: str, change: NumberChange) -> Number:
        n = self.world.numbers.get(number_id)
        if n is None:
            raise KeyError(f"unknown phone number {number_id}")
        event = change.event
        if change.throughput is not None:
            if event is None and change.throughput > n.throughput:
                event = "THROUGHPUT_UPGRADE"
            n.throughput = change.throughput
        if change.quality_rating is not None:
            if event is None:
                event = "UNFLAGGED" if change.quality_rating == "GREEN" else "FLAGGED"
            n.quality_rating = change.quality_rating
        self._number_event(n, event or "ONBOARDING")
        return n

    def change_business(self, business_id: str, change: BusinessChange) -> None:
        b = self.world.businesses.get(business_id)
        if b is None:
            raise KeyError(f"unknown business {business_id}")
        if change.tier not in TIERS:
            raise ValueError(f"unknown tier {change.tier!r}")
        order = list(TIERS)
        event = "UPGRADE" if order.index(change.tier) > order.index(b.tier) else "DOWNGRADE"
        b.tier = change.tier
        for n in self.world.numbers.values():
            if self.world.wabas[n.waba_id].business_id == b.id:
                self._number_event(n, event)

    def _number_event(self, n: Number, event: str) -> None:
        tier = self.world.business_of(n).tier
        self.dispatcher.schedule(0.0, n.waba_id, "phone_number_quality_update", {
            "display_phone_number": n.display_phone_number, "event": event, "current_limit": tier,
            "max_daily_conversations_per_business": tier,
            "throughput": {"level": n.throughput_level()}, "quality_rating": n.quality_rating})

    # --- templates via the Graph API ---------------------------------------------------------
    def create_template(self, waba: Waba, body: dict) -> Template:
        name, lang, cat = body.get("name"), body.get("language"), body.get("category")
        for key, v in (("name", name), ("language", lang), ("category", cat)):
            if not v:
                raise GraphError(100, message=f"(#100) The parameter {key} is required.")
        if not isinstance(name, str) or not _TEMPLATE_NAME.match(name):
            raise GraphError(100, message="(#100) Invalid parameter",
                             details="Template name can only contain lowercase characters, numbers and underscores.")
        if cat not in ("MARKETING", "UTILITY", "AUTHENTICATION"):
            raise GraphError(100, message="(#100) Param category must be one of {MARKETING, UTILITY, AUTHENTICATION}")
        if (waba.id, name, lang) in self.world.templates:
            raise GraphError(100, subcode=2388024, message="Invalid parameter",
                             details=f"Content in this language already exists: {name} ({lang})")
        comps = body.get("components") or []
        text = next((c.get("text", "") for c in comps if isinstance(c, dict) and str(c.get("type")).upper() == "BODY"), "")
        params = len(dict.fromkeys(_PLACEHOLDER.findall(text or "")))
        t = Template(self.world.next_template_id(), name, waba.id, str(lang), "PENDING", cat, params, text or None)
        self.world.templates[(waba.id, name, t.language)] = t
        review = self.config.template_review_s
        if review is not None:
            asyncio.get_running_loop().call_later(review, self._review, t)
        return t

    def _review(self, t: Template) -> None:
        if self.world.templates.get((t.waba_id, t.name, t.language)) is t and t.status == "PENDING":
            self._set_template_status(t, "APPROVED", None)

    def delete_template(self, waba: Waba, name: str | None, hsm_id: str | None) -> int:
        if not name:
            raise GraphError(100, message="(#100) The parameter name is required.")
        keys = [k for k, t in self.world.templates.items()
                if k[0] == waba.id and t.name == name and (hsm_id is None or t.id == hsm_id)]
        if not keys:
            raise GraphError(100, subcode=2593002, message="Invalid parameter",
                             details=f"Message template \"{name}\" not found")
        for k in keys:
            del self.world.templates[k]
        return len(keys)

    # --- numbers -----------------------------------------------------------------------------
    def register(self, number: Number, body: dict) -> None:
        if body.get("messaging_product") != "whatsapp":
            raise GraphError(100, message="(#100) The parameter messaging_product is required.")
        pin = body.get("pin")
        if pin is None:
            raise GraphError(100, message="(#100) The parameter pin is required.")
        if not isinstance(pin, str) or not re.fullmatch(r"\d{6}", pin):
            raise GraphError(100, message="(#100) Param pin must be 6 characters long.")
        now = time.monotonic()
        lim = self.config.limits
        calls = number.register_calls
        while calls and calls[0] <= now - lim.register_window_s:
            calls.popleft()
        if len(calls) >= lim.register_max:
            raise GraphError(133016, details="Too many register requests for this phone number; try again later.")
        calls.append(now)
        number.registered = True

    def number_fields(self, n: Number, fields: str | None) -> dict:
        full = {
            "verified_name": n.verified_name, "code_verification_status": "VERIFIED",
            "display_phone_number": n.display_phone_number, "quality_rating": n.quality_rating,
            "platform_type": n.platform_type, "throughput": {"level": n.throughput_level()},
            "status": "CONNECTED" if n.registered else "PENDING", "name_status": "APPROVED",
            "whatsapp_business_manager_messaging_limit": self.world.business_of(n).tier,
            "messaging_limit_tier": self.world.business_of(n).tier, "id": n.id,
        }
        if not fields:
            return {k: full[k] for k in ("verified_name", "code_verification_status", "display_phone_number",
                                         "quality_rating", "platform_type", "throughput", "id")}
        wanted = [f.strip() for f in fields.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in full]
        if unknown:
            raise GraphError(100, message=f"(#100) Tried accessing nonexisting field ({unknown[0]}) on node type "
                                          "(WhatsAppBusinessPhoneNumber)")
        return {**{f: full[f] for f in wanted}, "id": n.id}

    # --- signup ------------------------------------------------------------------------------
    def new_code(self, req: SignupCodeRequest) -> SignupCode:
        if req.app_id not in self.world.apps:
            raise KeyError(f"unknown app {req.app_id}")
        for w in req.waba_ids:
            if w not in self.world.wabas:
                raise KeyError(f"unknown WABA {w}")
        code = SignupCode("AQ" + secrets.token_urlsafe(48), req.app_id, list(req.waba_ids),
                          req.token or "EAAG" + secrets.token_urlsafe(120), time.monotonic())
        self.world.codes[code.code] = code
        return code

    def exchange(self, client_id: str | None, client_secret: str | None, code: str | None) -> str:
        for key, v in (("client_id", client_id), ("client_secret", client_secret), ("code", code)):
            if not v:
                raise GraphError(100, message=f"Missing {key} parameter.")
        app = self.world.apps.get(client_id or "")
        if app is None:
            raise GraphError(101, message="Error validating application. Invalid application ID.", http_status=400)
        if not secrets.compare_digest(app.secret, client_secret or ""):
            raise GraphError(1, message="Error validating client secret.", http_status=400)
        c = self.world.codes.get(code or "")
        if c is None or c.app_id != app.id:
            raise GraphError(100, subcode=36008, message="Error validating verification code.")
        if c.used:
            raise GraphError(100, subcode=36009, message="This authorization code has been used.")
        if time.monotonic() - c.created > self.config.limits.signup_code_ttl_s:
            raise GraphError(100, subcode=36007, message="This authorization code has expired.")
        c.used = True
        self.world.tokens[c.token] = Token(c.token, app.id, list(c.waba_ids))
        for waba_id in c.waba_ids:  # the partner app learns of the new customer WABA
            owner = self.world.wabas[waba_id].business_id
            self.dispatcher.schedule(0.0, waba_id, "account_update", {
                "event": "PARTNER_ADDED", "waba_info": {"waba_id": waba_id, "owner_business_id": owner}},
                app_id=app.id, entry_id=owner)
        return c.token

    def account_update(self, waba_id: str, event: str, details: dict | None = None) -> None:
        """An ``account_update`` webhook about a WABA (ACCOUNT_VIOLATION, PARTNER_REMOVED, …)."""
        if waba_id not in self.world.wabas:
            raise KeyError(f"unknown WABA {waba_id}")
        self.dispatcher.schedule(0.0, waba_id, "account_update", {"event": event, **(details or {})})

    def app_from_token(self, token: str | None) -> str:
        """The app id of an app access token (``app_id|app_secret``) or of an app-bound user token."""
        if token and "|" in token:
            app_id, _, secret = token.partition("|")
            app = self.world.apps.get(app_id)
            if app is not None and secrets.compare_digest(app.secret, secret):
                return app.id
            raise GraphError(190)
        t = self.auth(token)
        if t.app_id is None:
            raise GraphError(190)
        return t.app_id

    def debug(self, app_id: str, input_token: str | None) -> dict:
        if not input_token:
            raise GraphError(100, message="(#100) The parameter input_token is required")
        t = self.world.tokens.get(input_token)
        if t is None or t.app_id not in (None, app_id):
            return {"data": {"is_valid": False, "error": {"code": 190, "message": "Invalid OAuth access token."},
                             "scopes": []}}
        wabas = list(self.world.wabas) if "*" in t.waba_ids else list(t.waba_ids)
        scopes = ["whatsapp_business_management", "whatsapp_business_messaging"]
        return {"data": {
            "app_id": app_id, "type": "SYSTEM_USER", "application": self.world.apps[app_id].name
            if app_id in self.world.apps else "app", "data_access_expires_at": 0, "expires_at": 0,
            "is_valid": t.valid, "issued_at": int(self.counters.started), "scopes": scopes,
            "granular_scopes": [{"scope": s, "target_ids": wabas} for s in scopes],
            "user_id": "1" + hashlib.sha1(t.token.encode()).hexdigest()[:14].translate(str.maketrans("abcdef", "123456")),
        }}


def decode_b64(value: str) -> bytes:
    """``content_b64`` of the control API; a ValueError (422) when it is not base64."""
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as e:
        raise ValueError(f"content_b64 is not base64: {e}") from None


def _deep_merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()
