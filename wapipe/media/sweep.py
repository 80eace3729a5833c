"""Retention for stored media: delete every object older than its tenant's ``content`` retention
and, with ``erased``, every object whose subject was erased (already unreadable: this removes the
ciphertext too).

``days(tenant_id)`` is ``sinks.retention.RetentionDays(settings, registry)(tenant_id, "content")``
in the service, ``erased(key_id)`` the key ring's ``is_erased``; the clock is a parameter so the
sweep is testable without waiting days.
"""

from __future__ import annotations

import asyncio

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

from wapipe.log import get_logger
from wapipe.media.sealed import CorruptMedia, header_size, key_id_of
from wapipe.media.store import MediaStore

log = get_logger(__name__)


@dataclass(slots=True)
class SweepResult:
    kept: int = 0
    deleted: int = 0
    erased: int = 0  # deleted because their subject was erased
    by_tenant: dict[str, int] = field(default_factory=dict)  # tenant -> deleted


async def sweep(store: MediaStore, days: Callable[[str], int], *, now: dt.datetime | None = None,
                erased: Callable[[str], bool] | None = None) -> SweepResult:
    now = now or dt.datetime.now(dt.timezone.utc)
    result = SweepResult()
    verdicts: dict[str, bool] = {}  # key id -> erased, once per sweep
    for tenant_id in await store.tenants():
        keep = dt.timedelta(days=days(tenant_id))
        for obj in await store.list(tenant_id):
            expired = now - obj.stored_at > keep
            gone = False
            if not expired and erased is not None:
                key_id = await _key_id(store, tenant_id, obj.object_id)
                if key_id is not None:
                    if key_id not in verdicts:  # in a thread: a key not in memory is read from its topic
                        verdicts[key_id] = await asyncio.to_thread(erased, key_id)
                    gone = verdicts[key_id]
            if (expired or gone) and await store.delete(tenant_id, obj.object_id):
                result.deleted += 1
                result.erased += int(gone)
                result.by_tenant[tenant_id] = result.by_tenant.get(tenant_id, 0) + 1
            elif not (expired or gone):
                result.kept += 1
    if result.deleted:
        log.info("media.swept", deleted=result.deleted, kept=result.kept, by_tenant=result.by_tenant)
    return result


async def _key_id(store: MediaStore, tenant_id: str, object_id: str) -> str | None:
    """None for a blob that is not a sealed media object (left to retention, never guessed at)."""
    try:
        prefix = await store.head(tenant_id, object_id, 4096)
        need = header_size(prefix)
        if need > len(prefix):
            prefix = await store.head(tenant_id, object_id, need)
        return key_id_of(prefix)
    except (CorruptMedia, KeyError):
        return None
