"""Retention for stored media: delete every object older than its tenant's ``content`` retention.

``days(tenant_id)`` is ``sinks.retention.RetentionDays(settings, registry)(tenant_id, "content")``
in the service; the clock is a parameter so the sweep is testable without waiting days.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from wapipe.log import get_logger
from wapipe.media.store import MediaStore

log = get_logger(__name__)


@dataclass(slots=True)
class SweepResult:
    kept: int = 0
    deleted: int = 0
    by_tenant: dict[str, int] = field(default_factory=dict)  # tenant -> deleted


async def sweep(store: MediaStore, days: Callable[[str], int], *, now: dt.datetime | None = None) -> SweepResult:
    now = now or dt.datetime.now(dt.timezone.utc)
    result = SweepResult()
    for tenant_id in await store.tenants():
        keep = dt.timedelta(days=days(tenant_id))
        for obj in await store.list(tenant_id):
            if now - obj.stored_at > keep:
                if await store.delete(tenant_id, obj.object_id):
                    result.deleted += 1
                    result.by_tenant[tenant_id] = result.by_tenant.get(tenant_id, 0) + 1
            else:
                result.kept += 1
    if result.deleted:
        log.info("media.swept", deleted=result.deleted, kept=result.kept, by_tenant=result.by_tenant)
    return result
