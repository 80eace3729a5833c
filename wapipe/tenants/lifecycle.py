"""Refreshing a tenant's numbers and limits from Meta, and disconnecting a tenant.

Disconnect: unsubscribe our app from the WABA (``DELETE /{waba}/subscribed_apps``), then write the
tenant with ``token=None`` and status DISCONNECTED (the sealed token is gone from the latest record;
compaction removes the older records within the topic's ``max.compaction.lag.ms``). The send
pipeline refuses non-ACTIVE tenants (``guard.refusal`` -> "tenant disconnected") and fails their
queued commands with that reason. The audit trail is kept and extended.
"""

from __future__ import annotations

import asyncio
from typing import Any

from wapipe.log import get_logger
from wapipe.tenants.limits import apply_number_info
from wapipe.tenants.models import Tenant, TenantStatus
from wapipe.tenants.service import TenantError, TenantService

log = get_logger(__name__)


async def refresh(service: TenantService, graph: Any, tenant_id: str) -> Tenant:
    """Quality rating, throughput and messaging-limit tier of every number, from the Graph API."""
    tenant = service.get(tenant_id)
    if tenant.token is None:
        raise TenantError(f"tenant {tenant_id} has no token ({tenant.status})")
    token = tenant.open_token(service.kek)
    new = tenant
    for n in tenant.numbers:
        new = apply_number_info(new, await graph.phone_number(n.phone_number_id, token=token))
    if new is tenant:
        service.audit("tenant.refreshed", tenant_id, target=tenant.waba_id, details={"changed": "no"})
        return tenant
    return await asyncio.to_thread(service.save, new, "tenant.refreshed", details={
        "changed": "yes", "messaging_limit": new.messaging_limit,
        "throughput": ",".join(f"{n.phone_number_id}={n.throughput_mps}" for n in new.numbers),
        "quality": ",".join(f"{n.phone_number_id}={n.quality_rating}" for n in new.numbers)})


async def disconnect(service: TenantService, graph: Any, tenant_id: str, *, reason: str = "operator request") -> Tenant:
    tenant = service.get(tenant_id)
    if tenant.status == TenantStatus.DISCONNECTED and tenant.token is None:
        raise TenantError(f"tenant {tenant_id} is already disconnected")
    unsubscribed = "no waba"
    if tenant.waba_id and tenant.token is not None:
        try:
            ok = await graph.unsubscribe_app(tenant.waba_id, token=tenant.open_token(service.kek))
            unsubscribed = "yes" if ok else "not confirmed"
        except Exception as exc:  # e.g. the token was already revoked on Meta's side: still disconnect
            unsubscribed = f"failed: {type(exc).__name__}: {exc}"[:300]
            log.warning("tenant.unsubscribe_failed", tenant_id=tenant_id, error=unsubscribed)
            service.audit("tenant.unsubscribe", tenant_id, target=tenant.waba_id, outcome="failed",
                          details={"reason": unsubscribed})
    new = tenant.evolve(status=TenantStatus.DISCONNECTED, token=None)
    return await asyncio.to_thread(service.save, new, "tenant.disconnected", details={
        "reason": reason, "unsubscribed": unsubscribed, "token": "deleted"})
