"""A tenant's message templates: sync from Meta, create and delete through the Graph API.

The catalogue is ``wa.templates`` (compacted by ``<waba_id>/<name>/<language>``); the send
pipeline reads it through ``TenantRegistry.template(...)``. Status changes between syncs arrive
as ``message_template_status_update`` webhooks (see ``follow.py``).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from wapipe.tenants.models import Template, Tenant, body_parameter_count, utcnow
from wapipe.tenants.service import TenantError, TenantService


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0


def _same(a: Template, b: Template) -> bool:
    return a.model_dump(exclude={"updated_at", "status_at"}) == b.model_dump(exclude={"updated_at", "status_at"})


def _require_waba(tenant: Tenant) -> str:
    if not tenant.waba_id:
        raise TenantError(f"tenant {tenant.tenant_id} has no WABA yet")
    return tenant.waba_id


async def sync_templates(service: TenantService, graph: Any, tenant: Tenant) -> SyncReport:
    """Make ``wa.templates`` match Meta's list for the tenant's WABA (add, change, tombstone)."""
    waba = _require_waba(tenant)
    token = tenant.open_token(service.kek)
    remote = await graph.list_templates(waba, token=token)
    report = SyncReport()
    seen: set[str] = set()
    for info in remote:
        tpl = Template.from_meta(tenant.tenant_id, waba, info.model_dump())
        seen.add(tpl.key)
        have = service.registry.template(waba, tpl.name, tpl.language)
        if have is not None and _same(have, tpl):
            report.unchanged += 1
            continue
        await asyncio.to_thread(service.save_template, tpl)
        (report.changed if have else report.added).append(tpl.key)
    for have in service.registry.templates(tenant.tenant_id):
        if have.waba_id == waba and have.key not in seen:
            await asyncio.to_thread(service.remove_template, have.waba_id, have.name, have.language)
            report.removed.append(have.key)
    service.audit("tenant.templates.synced", tenant.tenant_id, target=waba,
                  details={"added": len(report.added), "changed": len(report.changed),
                           "removed": len(report.removed), "unchanged": report.unchanged})
    return report


async def create_template(service: TenantService, graph: Any, tenant: Tenant, *, name: str, language: str,
                          category: str, components: list[dict[str, Any]]) -> Template:
    """Submit a template for review; it is stored as Meta answers (usually PENDING)."""
    waba = _require_waba(tenant)
    category = category.upper()
    if category not in ("MARKETING", "UTILITY", "AUTHENTICATION"):
        raise TenantError(f"category must be MARKETING, UTILITY or AUTHENTICATION, not {category!r}")
    created = await graph.create_template(waba, name=name, language=language, category=category,
                                          components=components, token=tenant.open_token(service.kek))
    tpl = Template(tenant_id=tenant.tenant_id, waba_id=waba, template_id=created.id, name=name, language=language,
                   status=(created.status or "PENDING").upper(), category=(created.category or category).upper(),
                   body_parameter_count=body_parameter_count(components), components=json.dumps(components),
                   status_at=utcnow())
    await asyncio.to_thread(service.save_template, tpl)
    service.audit("tenant.template.created", tenant.tenant_id, target=f"{name}/{language}",
                  details={"template_id": created.id, "status": tpl.status})
    return tpl


async def delete_template(service: TenantService, graph: Any, tenant: Tenant, *, name: str,
                          language: str | None = None) -> list[str]:
    """Delete on Meta (one language through its hsm_id, or every language by name), then tombstone."""
    waba = _require_waba(tenant)
    ours = [t for t in service.registry.templates(tenant.tenant_id)
            if t.name == name and (language is None or t.language == language)]
    if language is not None and not ours:
        raise TenantError(f"no template {name} ({language}) for tenant {tenant.tenant_id}")
    hsm_id = ours[0].template_id if language is not None else None
    await graph.delete_template(waba, name, hsm_id=hsm_id, token=tenant.open_token(service.kek))
    removed = []
    for t in ours:
        await asyncio.to_thread(service.remove_template, t.waba_id, t.name, t.language)
        removed.append(t.key)
    service.audit("tenant.template.deleted", tenant.tenant_id, target=name,
                  details={"language": language or "*", "removed": len(removed)})
    return removed
