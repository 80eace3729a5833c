"""The admin HTTP API for tenants (starlette), served by ``wapipe tenants serve``.

=======================================================  =========  ==================================
route                                                    who        what
=======================================================  =========  ==================================
``GET    /admin/tenants``                                operator   list
``POST   /admin/tenants/onboard``                        operator   embedded signup (JSON: tenant_id,
                                                                    code, app_id?, waba_id?, pin?);
                                                                    answers the tenant's API key once
``POST   /admin/tenants/{tenant_id}/resume``             operator   continue a failed onboarding
``GET    /admin/tenants/{tenant_id}``                    op/tenant  show (never the token)
``PATCH  /admin/tenants/{tenant_id}``                    operator   retention, throughput, status, limit
``POST   /admin/tenants/{tenant_id}/api-key``            operator   issue a new tenant key (old one void)
``POST   /admin/tenants/{tenant_id}/refresh``            op/tenant  numbers and limits from Meta
``POST   /admin/tenants/{tenant_id}/disconnect``         op/tenant  unsubscribe, delete token
``GET    /admin/tenants/{tenant_id}/templates``          op/tenant  the catalogue
``POST   /admin/tenants/{tenant_id}/templates/sync``     op/tenant  sync from Meta
=======================================================  =========  ==================================

Errors are JSON ``{"error": ...}``: 400 refused input (not JSON, a field out of its bounds, a
``tenant_id`` that is not an id), 413 a body over ``WAPIPE_API_MAX_BODY_BYTES``, 401/403 keys, 404
unknown tenant, 409 a failed onboarding step (with ``step`` and how to resume), 502 Meta refused a
call. Bodies are read by ``wapipe.http_input`` and every field is bounded here (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wapipe.config import Settings
from wapipe.http_input import BadInput, check_id, json_body
from wapipe.log import get_logger
from wapipe.tenants.auth import Principal, Unauthorized, authorize, new_api_key
from wapipe.tenants.models import (
    AVRO_INT_MAX,
    DISPLAY_NAME_MAX,
    HIGH_MPS,
    META_ID_PATTERN,
    RETENTION_KINDS,
    RETENTION_MAX_DAYS,
    TENANT_ID_PATTERN,
)
from wapipe.tenants.onboarding import Onboarder, OnboardingFailed
from wapipe.tenants.service import TenantError, TenantService

log = get_logger(__name__)


_TENANT_ID = re.compile(TENANT_ID_PATTERN)
TenantId = Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
MetaId = Annotated[str, Field(pattern=META_ID_PATTERN)]
SignupCode = Annotated[str, Field(min_length=1, max_length=4096)]
Pin = Annotated[str, Field(pattern=r"^[0-9]{6}$")]  # Meta's two-step verification PIN
DisplayName = Annotated[str, Field(max_length=DISPLAY_NAME_MAX)]
RetentionKind = Annotated[str, Field(max_length=32)]  # one of RETENTION_KINDS (checked below)
RetentionDays = Annotated[int, Field(ge=1, le=RETENTION_MAX_DAYS)]
Mps = Annotated[int, Field(ge=1, le=HIGH_MPS)]  # Meta's highest per-number throughput


class OnboardBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tenant_id: TenantId
    code: SignupCode = Field(repr=False)
    app_id: MetaId | None = None
    waba_id: MetaId | None = None
    pin: Pin | None = Field(default=None, repr=False)
    display_name: DisplayName = ""


class ResumeBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    code: SignupCode | None = Field(default=None, repr=False)
    waba_id: MetaId | None = None
    pin: Pin | None = Field(default=None, repr=False)


class PatchBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    retention_days: Annotated[dict[RetentionKind, RetentionDays], Field(max_length=len(RETENTION_KINDS))] | None = None
    throughput_mps: Annotated[dict[MetaId, Mps], Field(max_length=1000)] | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    messaging_limit: Annotated[int, Field(ge=0, le=AVRO_INT_MAX)] | None = None
    display_name: DisplayName | None = None

    @field_validator("retention_days")
    @classmethod
    def _known_kinds(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        unknown = sorted(set(v or ()) - set(RETENTION_KINDS))
        if unknown:
            raise ValueError(f"unknown retention data type(s) {unknown}; known: {', '.join(RETENTION_KINDS)}")
        return v


class DisconnectBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: Annotated[str, Field(max_length=1024)] = "requested through the admin API"


def tenant_json(t) -> dict:
    return t.operator_view()


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


class AdminApi:
    def __init__(self, settings: Settings, service: TenantService, graph: Any) -> None:
        self.settings = settings
        self.service = service
        self.graph = graph
        self.apps = {k: v.get_secret_value() for k, v in settings.meta_apps.items()}

    # --- plumbing ---------------------------------------------------------------------------
    async def _body(self, request: Request, model: type[BaseModel]) -> Any:
        return await json_body(request, model, self.settings.api_max_body_bytes)

    def _handle(self, fn, *, tenant_scoped: bool = True, operator_only: bool = False):
        async def endpoint(request: Request):
            tid = request.path_params.get("tenant_id") if tenant_scoped else None
            try:
                who = authorize(self.settings, self.service.registry, request, tid)
                if operator_only and who.kind != "operator":
                    raise Unauthorized(403, "operator key required")
                if tid is not None:
                    check_id(tid, _TENANT_ID, "tenant_id")
                if tid is not None and self.service.registry.tenant(tid) is None:
                    return _error(404, f"no tenant {tid!r}")
                return await fn(request, who)
            except Unauthorized as exc:
                return _error(exc.status, str(exc))
            except BadInput as exc:
                return exc.response()
            except OnboardingFailed as exc:
                return _error(409, str(exc), step=exc.step, tenant_id=exc.tenant_id,
                              resume=f"POST /admin/tenants/{exc.tenant_id}/resume")
            except TenantError as exc:
                status = 404 if str(exc).startswith("no tenant") else 400
                return _error(status, str(exc))
            except Exception as exc:
                from connectors.meta.errors import MetaError

                if isinstance(exc, MetaError):
                    return _error(502, f"Meta refused: {exc}")
                log.error("admin_api.failed", path=request.url.path, error=f"{type(exc).__name__}: {exc}")
                return _error(500, "internal error")
        return endpoint

    def _as(self, who: Principal) -> TenantService:
        """The service, audited as this caller."""
        return self.service.as_actor(who.actor)

    # --- routes -----------------------------------------------------------------------------
    async def list(self, request: Request, who: Principal):
        return JSONResponse([tenant_json(t) for t in self.service.registry.tenants()])

    async def show(self, request: Request, who: Principal):
        return JSONResponse(tenant_json(self.service.get(request.path_params["tenant_id"])))

    async def onboard(self, request: Request, who: Principal):
        body = await self._body(request, OnboardBody)
        svc = self._as(who)
        t = await Onboarder(svc, self.graph, self.apps).onboard(
            body.tenant_id, code=body.code, app_id=body.app_id, waba_id=body.waba_id, pin=body.pin,
            display_name=body.display_name)
        key = new_api_key()
        t = await asyncio.to_thread(svc.save, t.with_api_key(key), "tenant.api_key.issued")
        return JSONResponse({"tenant": tenant_json(t), "api_key": key}, status_code=201)

    async def resume(self, request: Request, who: Principal):
        body = await self._body(request, ResumeBody)
        tid = request.path_params["tenant_id"]
        svc = self._as(who)
        t = await Onboarder(svc, self.graph, self.apps).resume(tid, code=body.code, waba_id=body.waba_id, pin=body.pin)
        out: dict[str, Any] = {"tenant": tenant_json(t)}
        if t.api_key_sha256 is None:
            key = new_api_key()
            t = await asyncio.to_thread(svc.save, t.with_api_key(key), "tenant.api_key.issued")
            out = {"tenant": tenant_json(t), "api_key": key}
        return JSONResponse(out)

    async def patch(self, request: Request, who: Principal):
        body = await self._body(request, PatchBody)
        t = await asyncio.to_thread(
            self._as(who).update, request.path_params["tenant_id"], retention=body.retention_days,
            throughput=body.throughput_mps, status=body.status, messaging_limit=body.messaging_limit,
            display_name=body.display_name)
        return JSONResponse(tenant_json(t))

    async def api_key(self, request: Request, who: Principal):
        svc = self._as(who)
        key = new_api_key()
        t = await asyncio.to_thread(svc.save, svc.get(request.path_params["tenant_id"]).with_api_key(key),
                                    "tenant.api_key.issued")
        return JSONResponse({"tenant_id": t.tenant_id, "api_key": key}, status_code=201)

    async def refresh(self, request: Request, who: Principal):
        from wapipe.tenants.lifecycle import refresh

        return JSONResponse(tenant_json(await refresh(self._as(who), self.graph, request.path_params["tenant_id"])))

    async def disconnect(self, request: Request, who: Principal):
        from wapipe.tenants.lifecycle import disconnect

        body = await self._body(request, DisconnectBody)
        t = await disconnect(self._as(who), self.graph, request.path_params["tenant_id"], reason=body.reason)
        return JSONResponse(tenant_json(t))

    async def templates(self, request: Request, who: Principal):
        tpls = self.service.registry.templates(request.path_params["tenant_id"])
        return JSONResponse([t.model_dump(mode="json") for t in tpls])

    async def templates_sync(self, request: Request, who: Principal):
        from wapipe.tenants.templates import sync_templates

        svc = self._as(who)
        r = await sync_templates(svc, self.graph, svc.get(request.path_params["tenant_id"]))
        return JSONResponse({"added": r.added, "changed": r.changed, "removed": r.removed, "unchanged": r.unchanged})

    def routes(self) -> list[Route]:
        h = self._handle
        base = "/admin/tenants"
        return [
            Route(base, h(self.list, tenant_scoped=False, operator_only=True), methods=["GET"]),
            Route(f"{base}/onboard", h(self.onboard, tenant_scoped=False, operator_only=True), methods=["POST"]),
            Route(base + "/{tenant_id}", h(self.show), methods=["GET"]),
            Route(base + "/{tenant_id}", h(self.patch, operator_only=True), methods=["PATCH"]),
            Route(base + "/{tenant_id}/resume", h(self.resume, operator_only=True), methods=["POST"]),
            Route(base + "/{tenant_id}/api-key", h(self.api_key, operator_only=True), methods=["POST"]),
            Route(base + "/{tenant_id}/refresh", h(self.refresh), methods=["POST"]),
            Route(base + "/{tenant_id}/disconnect", h(self.disconnect), methods=["POST"]),
            Route(base + "/{tenant_id}/templates", h(self.templates), methods=["GET"]),
            Route(base + "/{tenant_id}/templates/sync", h(self.templates_sync), methods=["POST"]),
        ]


def create_app(settings: Settings, bootstrap: str) -> Starlette:
    """The admin app; the service (registry, producer) and the Graph client live for its lifespan."""
    from connectors.meta.client import GraphClient

    holder: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        svc = await asyncio.to_thread(TenantService, settings, bootstrap, actor="operator:api")
        graph = GraphClient.from_settings(settings)
        api = AdminApi(settings, svc, graph)
        app.router.routes.extend(api.routes())
        holder["api"] = api
        try:
            yield
        finally:
            await graph.aclose()
            await asyncio.to_thread(svc.close)

    if settings.operator_api_key is None:
        log.warning("admin_api.no_operator_key", hint="set WAPIPE_OPERATOR_API_KEY; only tenant keys will work")
    return Starlette(routes=[], lifespan=lifespan)
