"""Retention days per (tenant, data type): the tenant's settings on ``wa.tenants``, else Settings."""

from __future__ import annotations

from typing import Any, Protocol

from wapipe.config import Settings


class TenantLookup(Protocol):
    def tenant(self, tenant_id: str) -> Any: ...

    def tenants(self) -> list[Any]: ...


class RetentionDays:
    def __init__(self, settings: Settings, tenants: TenantLookup | None = None) -> None:
        self._defaults = dict(settings.retention_defaults)
        self._tenants = tenants

    def __call__(self, tenant_id: str | None, kind: str) -> int:
        if tenant_id and self._tenants is not None:
            t = self._tenants.tenant(tenant_id)
            days = (getattr(t, "retention_days", None) or {}).get(kind) if t is not None else None
            if days:
                return int(days)
        return int(self._defaults.get(kind, 365))

    def table(self, kind: str) -> tuple[list[str], list[int], int]:
        """(tenant ids, their days, the default) for ClickHouse's ``transform`` (the Avro pass-through)."""
        tenants, days = [], []
        if self._tenants is not None:
            for t in self._tenants.tenants():
                d = (getattr(t, "retention_days", None) or {}).get(kind)
                if d:
                    tenants.append(t.tenant_id)
                    days.append(int(d))
        return tenants, days, int(self._defaults.get(kind, 365))
