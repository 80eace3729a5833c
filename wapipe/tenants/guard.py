"""May this tenant send this message now? One answer for the send pipeline, before any Meta call.

``refusal(registry, tenant_id, phone_number_id, template=(name, language))`` returns ``None`` when
the send may go ahead, else a ``Refusal`` whose ``reason`` is the clear, stable text to put on the
SendResult / dead letter ("tenant disconnected", "template paused", ...). It also enforces tenant
isolation: a command can only use a number of its own tenant.
"""

from __future__ import annotations

from dataclasses import dataclass

from wapipe.tenants.models import TenantStatus


@dataclass(frozen=True)
class Refusal:
    code: str  # tenant_unknown, tenant_disconnected, tenant_suspended, tenant_onboarding, no_token,
    #            number_not_of_tenant, number_unavailable, template_unknown, template_not_approved
    reason: str


def refusal(registry, tenant_id: str, phone_number_id: str | None,
            template: tuple[str, str] | None = None) -> Refusal | None:
    t = registry.tenant(tenant_id)
    if t is None:
        return Refusal("tenant_unknown", f"unknown tenant {tenant_id}")
    if t.status != TenantStatus.ACTIVE:
        return Refusal(f"tenant_{t.status.lower()}", f"tenant {t.status.lower()}")
    if t.token is None:
        return Refusal("no_token", "tenant has no token")
    if phone_number_id is not None:
        n = t.number(phone_number_id)
        if n is None:
            return Refusal("number_not_of_tenant", f"phone number {phone_number_id} does not belong to tenant {tenant_id}")
        if n.status not in ("CONNECTED",):
            return Refusal("number_unavailable", f"phone number {phone_number_id} is {n.status}")
    if template is not None:
        name, language = template
        tpl = registry.template(t.waba_id or "", name, language)
        if tpl is None:
            return Refusal("template_unknown", f"template {name} ({language}) is not known for this WABA")
        if not tpl.sendable:
            return Refusal("template_not_approved", f"template {tpl.status.lower()}"
                           + (f": {tpl.reason}" if tpl.reason else ""))
    return None
