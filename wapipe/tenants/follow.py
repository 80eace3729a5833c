"""``wapipe tenants follow``: Meta's account webhooks applied to ``wa.tenants`` and ``wa.templates``.

Consumes ``wa.account.events`` (AccountEvent records the normaliser writes) in the consumer group
``wapipe-tenants-follow`` and, per ``field``:

* ``message_template_status_update`` — the template's status becomes the event (APPROVED, REJECTED,
  PAUSED, DISABLED, ...; REINSTATED -> APPROVED; FLAGGED keeps the status and notes it; DELETED
  tombstones it). The send pipeline reads the catalogue live, so a PAUSED template is refused
  before any call to Meta.
* ``template_category_update`` — the template's category becomes ``new_category`` (a UTILITY
  template Meta recategorises as MARKETING is then refused to users who opted out of marketing).
* ``phone_number_quality_update`` — quality rating and throughput of the number (matched by its
  display number), and the portfolio's messaging-limit tier (``current_limit``) on every number of
  the tenant plus ``Tenant.messaging_limit``. The dispatcher hears it via ``TenantRegistry.on_change``.
* ``business_capability_update`` — ``max_daily_conversations_per_business`` -> messaging limit.
* ``account_update`` — PARTNER_REMOVED / APP_UNINSTALLED: the business removed our access, the
  tenant is disconnected locally (token deleted). Other events are audited.

Each applied change is an AuditEvent (actor ``meta``). Offsets are committed after the change was
acknowledged. A record that cannot be read or applied (whatever the exception) becomes a DeadLetter
on ``wa.tenants.dead`` through ``wapipe.deadletter`` (cut down when it would not fit), acked before
its offset is committed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from typing import Any

from wapipe.avro import SerdeError
from wapipe.config import Settings
from wapipe.deadletter import DeadLetter, Source, SyncDeadLetters
from wapipe.edge.batches import consume_batches
from wapipe.log import get_logger
from wapipe.tenants.limits import UNLIMITED, limit_for_tier, mps_for_level
from wapipe.tenants.models import Template, Tenant, TenantStatus
from wapipe.tenants.service import TenantService
from wapipe.tenants.store import PublishError
from wapipe.topics import ACCOUNT_EVENTS, TENANTS_DEAD

log = get_logger(__name__)

GROUP = "wapipe-tenants-follow"
_TEMPLATE_ALIASES = {"REINSTATED": "APPROVED", "UNPAUSED": "APPROVED"}
_DISCONNECTING = {"PARTNER_REMOVED", "APP_UNINSTALLED"}


def _digits(s: str | None) -> str:
    return re.sub(r"\D", "", s or "")


class Follower:
    def __init__(self, service: TenantService, *, group: str = GROUP) -> None:
        self.service = service
        self.serde = service.serde
        self.group = group
        self.dead_letters = SyncDeadLetters(service.serde, TENANTS_DEAD, service.producer,
                                            service.settings.dead_letter_max_bytes)

    # --- one event ----------------------------------------------------------------------------
    def handle(self, ev: dict) -> str:
        """Apply one AccountEvent record; returns what was done (for logs and tests)."""
        try:
            value = json.loads(ev.get("value") or "{}")
        except ValueError:
            value = {}
        if not isinstance(value, dict):
            value = {}
        reg = self.service.registry
        tenant = (reg.tenant(ev["tenant_id"]) if ev.get("tenant_id") else None) or reg.tenant_for_waba(ev["waba_id"])
        if tenant is None:
            log.info("tenants.follow.unknown_waba", waba_id=ev["waba_id"], field=ev["field"])
            return "ignored: no tenant for WABA"
        field = ev["field"]
        if field == "message_template_status_update":
            return self._template(tenant, ev["waba_id"], value, ev.get("timestamp"))
        if field == "template_category_update":
            return self._category(tenant, ev["waba_id"], value)
        if field == "phone_number_quality_update":
            return self._quality(tenant, ev.get("phone_number_id"), value)
        if field == "business_capability_update":
            return self._limit(tenant, value.get("max_daily_conversations_per_business"), field, value)
        if field == "account_update":
            return self._account(tenant, value)
        return "ignored: field not about tenants"

    def _template(self, tenant: Tenant, waba_id: str, v: dict, at=None) -> str:
        name, lang = v.get("message_template_name"), v.get("message_template_language")
        event = str(v.get("event") or "").upper()
        if not name or not lang or not event:
            return "ignored: template event without name/language/event"
        reason = v.get("reason") if v.get("reason") not in (None, "", "NONE") else None
        have = self.service.registry.template(waba_id, name, lang)
        details = {"event": event, "reason": reason, "template_id": v.get("message_template_id")}
        if have is not None and have.is_stale(at):
            # e.g. Meta retried an older delivery after a newer status arrived: keep the newer one
            self.service.audit("tenant.template.status", tenant.tenant_id, target=f"{name}/{lang}",
                               outcome="ignored", details={**details, "why": "older than the status held"})
            return f"template {name}/{lang}: stale {event} ignored"
        if event == "DELETED":
            if have is not None:
                self.service.remove_template(waba_id, name, lang)
            self.service.audit("tenant.template.status", tenant.tenant_id, target=f"{name}/{lang}", details=details)
            return f"template {name}/{lang} deleted"
        if event == "FLAGGED":
            status = have.status if have else "APPROVED"
            reason = f"FLAGGED{': ' + reason if reason else ''}"
        else:
            status = _TEMPLATE_ALIASES.get(event, event)
        if have is None:
            tpl = Template(tenant_id=tenant.tenant_id, waba_id=waba_id, name=name, language=lang, status=status,
                           template_id=str(v["message_template_id"]) if v.get("message_template_id") else None,
                           reason=reason, status_at=at)
        else:
            tpl = have.evolve(status=status, reason=reason, status_at=at or have.status_at)
        self.service.save_template(tpl)
        self.service.audit("tenant.template.status", tenant.tenant_id, target=f"{name}/{lang}",
                           details={**details, "status": status})
        return f"template {name}/{lang} {status}"

    def _category(self, tenant: Tenant, waba_id: str, v: dict) -> str:
        """Meta changed (or is about to change) a template's category: ``new_category`` is the category
        now in force in both of Meta's variants (completed: with ``previous_category``; impending: with
        ``correct_category`` and ``category_update_timestamp``). The send worker's marketing opt-out
        check reads it (processors/send/suppression.py)."""
        name, lang = v.get("message_template_name"), v.get("message_template_language")
        new = str(v.get("new_category") or "").upper()
        if not name or not lang or not new:
            return "ignored: category event without name/language/new_category"
        have = self.service.registry.template(waba_id, name, lang)
        details = {"previous_category": v.get("previous_category"), "new_category": new,
                   "correct_category": v.get("correct_category"), "template_id": v.get("message_template_id")}
        if have is None:
            self.service.audit("tenant.template.category", tenant.tenant_id, target=f"{name}/{lang}",
                               outcome="ignored", details={**details, "why": "template not in the catalogue"})
            return f"template {name}/{lang}: unknown, category {new} ignored"
        if have.category != new:
            self.service.save_template(have.evolve(category=new))
        self.service.audit("tenant.template.category", tenant.tenant_id, target=f"{name}/{lang}", details=details)
        return f"template {name}/{lang} category {new}"

    def _quality(self, tenant: Tenant, pnid: str | None, v: dict) -> str:
        number = tenant.number(pnid) if pnid else None
        if number is None and v.get("display_phone_number"):
            want = _digits(v["display_phone_number"])
            number = next((n for n in tenant.numbers if _digits(n.display_phone_number) == want), None)
        tier = v.get("current_limit") or v.get("max_daily_conversations_per_business")
        numbers = list(tenant.numbers)
        if number is not None:
            upd: dict[str, Any] = {}
            if v.get("quality_rating"):
                upd["quality_rating"] = str(v["quality_rating"]).upper()
            level = (v.get("throughput") or {}).get("level") if isinstance(v.get("throughput"), dict) else None
            mps = mps_for_level(level) or (1000 if str(v.get("event")).upper() == "THROUGHPUT_UPGRADE" else None)
            if mps:
                upd["throughput_mps"] = mps
            numbers = [n.model_copy(update=upd) if n.phone_number_id == number.phone_number_id else n for n in numbers]
        if tier and limit_for_tier(tier) is not None:
            numbers = [n.model_copy(update={"messaging_limit_tier": str(tier).upper()}) for n in numbers]
        changes: dict[str, Any] = {}
        if tuple(numbers) != tenant.numbers:
            changes["numbers"] = tuple(numbers)
        limit = limit_for_tier(tier)
        if limit is not None and limit != tenant.messaging_limit:
            changes["messaging_limit"] = limit
        details = {"event": v.get("event"), "number": number.phone_number_id if number else None, "tier": tier,
                   "messaging_limit": limit, "quality": v.get("quality_rating")}
        if not changes:
            self.service.audit("tenant.number.quality", tenant.tenant_id, target=tenant.waba_id,
                               details={**details, "changed": "no"})
            return "no change"
        self.service.save(tenant.evolve(**changes), "tenant.number.quality", details=details)
        return f"limits updated ({', '.join(sorted(changes))})"

    def _limit(self, tenant: Tenant, tier: Any, field: str, v: dict) -> str:
        limit = limit_for_tier(str(tier)) if tier is not None else None
        if limit is None and str(tier).isdigit():  # some payloads give the number itself
            limit = min(int(str(tier)), UNLIMITED)
        if limit is None or limit == tenant.messaging_limit:
            return "no change"
        self.service.save(tenant.evolve(messaging_limit=limit), "tenant.messaging_limit",
                          details={"field": field, "tier": tier, "messaging_limit": limit})
        return f"messaging limit {limit}"

    def _account(self, tenant: Tenant, v: dict) -> str:
        event = str(v.get("event") or "").upper()
        if event in _DISCONNECTING and tenant.status != TenantStatus.DISCONNECTED:
            self.service.save(tenant.evolve(status=TenantStatus.DISCONNECTED, token=None), "tenant.disconnected",
                              details={"reason": f"meta account_update {event}", "token": "deleted"})
            return f"disconnected ({event})"
        self.service.audit("tenant.account_update", tenant.tenant_id, target=tenant.waba_id,
                           details={"event": event or "?"})
        return f"audited {event}"

    # --- the loop -------------------------------------------------------------------------------
    def run(self, stop: threading.Event, *, on_ready=None, on_poll=None) -> None:
        """Until ``stop``: account events in batches (``edge.batches.consume_batches``), each batch
        committed after its events were applied; a refused commit or a broker away stops nothing."""
        asyncio.run(consume_batches(self.service.bootstrap, self.group, [ACCOUNT_EVENTS], stop, self._batch,
                                    batch=100, poll_s=0.2, ready=on_ready, on_poll=on_poll))

    async def _batch(self, msgs: list) -> None:
        for msg in msgs:
            self._one(msg)

    def _one(self, msg) -> None:
        try:
            ev = self.serde.decode(msg.value(), "AccountEvent")
        except SerdeError as exc:
            self._dead(msg, str(exc), "SerdeError")
            return
        try:
            did = self.handle(ev)
        except PublishError:
            raise  # the broker refused our write: stop uncommitted, a restart retries
        except Exception as exc:  # one bad event never stops the follower
            log.error("tenants.follow.failed", waba_id=ev.get("waba_id"), field=ev.get("field"), error=str(exc))
            self._dead(msg, f"{type(exc).__name__}: {exc}", type(exc).__name__, ev.get("tenant_id"))
        else:
            log.info("tenants.follow.applied", waba_id=ev["waba_id"], field=ev["field"], did=did)

    def _dead(self, msg, reason: str, error_type: str, tenant_id: str | None = None) -> None:
        """Acked before the caller commits the record's offset (raises when the broker does not answer)."""
        tenant = tenant_id if isinstance(tenant_id, str) else None
        self.dead_letters.write(DeadLetter(Source.of_kafka(msg), reason[:2000], error_type, tenant_id=tenant),
                                key=msg.topic().encode())


def follow(settings: Settings, bootstrap: str, stop: threading.Event, *, on_ready=None, on_poll=None) -> None:
    with TenantService(settings, bootstrap, actor="meta") as svc:
        Follower(svc).run(stop, on_ready=on_ready, on_poll=on_poll)
