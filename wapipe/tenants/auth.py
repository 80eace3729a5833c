"""Admin API keys: the operator key (Settings.operator_api_key) opens every route; a tenant's own key
(only its SHA-256 is stored, on wa.tenants) opens only that tenant's routes.

Keys come as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Comparisons are constant-time.
Other areas' admin routes (privacy requests) can use ``authorize`` the same way.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

from wapipe.config import Settings


class Unauthorized(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Principal:
    kind: str  # "operator" or "tenant"
    tenant_id: str | None = None

    @property
    def actor(self) -> str:
        return "operator:api" if self.kind == "operator" else f"tenant:{self.tenant_id}"


def new_api_key() -> str:
    return "wpk_" + secrets.token_urlsafe(32)


def presented_key(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.headers.get("x-api-key") or None


def authorize(settings: Settings, registry, request: Request, tenant_id: str | None = None) -> Principal:
    """The caller, if allowed: the operator anywhere; a tenant only on ``tenant_id``'s routes."""
    key = presented_key(request)
    if not key:
        raise Unauthorized(401, "an API key is required (Authorization: Bearer <key>)")
    op = settings.operator_api_key.get_secret_value() if settings.operator_api_key else None
    if op and hmac.compare_digest(key.encode(), op.encode()):
        return Principal("operator")
    if tenant_id is not None:
        t = registry.tenant(tenant_id)
        if t is not None and t.api_key_matches(key):
            return Principal("tenant", tenant_id)
    raise Unauthorized(403, "this key may not do that")
