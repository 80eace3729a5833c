"""The privacy admin HTTP API (``wapipe privacy serve``), starlette.

Every route is per tenant and needs that tenant's API key or the operator key
(``wapipe.tenants.auth.authorize``: ``Authorization: Bearer <key>`` or ``X-API-Key``):

* ``POST /privacy/{tenant}/requests`` ``{"kind": "erasure|restriction|unrestriction", "wa_id"|"subject_id"}``
  -> 202 ``{request_id, confirmation_code, status}``
* ``POST /privacy/{tenant}/corrections`` ``{"wa_id"|"subject_id", "field", "value"}`` -> 202
* ``GET  /privacy/{tenant}/requests/{code}`` -> the request's status and steps
* ``GET  /privacy/{tenant}/export?wa_id=...`` (or ``subject_id=``) -> everything held, as JSON

Every request is an AuditEvent with the caller as actor. Bad input is a 400 with the reason.
Every lookup is the path tenant's: a subject id, number or confirmation code that is not the
tenant's is a 404, exactly as if it did not exist (docs/security.md, "Tenant isolation").
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from wapipe.config import Settings
from wapipe.log import get_logger
from wapipe.privacy.errors import UnknownSubject
from wapipe.privacy.export import jsonable
from wapipe.privacy.service import PrivacyService

log = get_logger(__name__)

API_KINDS = {"erasure": "ERASURE", "restriction": "RESTRICTION", "unrestriction": "UNRESTRICTION"}


class SubjectRef(BaseModel):
    wa_id: str | None = None
    subject_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "SubjectRef":
        if not (self.wa_id or self.subject_id):
            raise ValueError("give wa_id (the person's WhatsApp number) or subject_id")
        return self


class RequestIn(SubjectRef):
    kind: str

    @model_validator(mode="after")
    def _kind(self) -> "RequestIn":
        if self.kind.lower() not in API_KINDS:
            raise ValueError(f"kind must be one of {', '.join(API_KINDS)} (access: GET .../export)")
        return self


class CorrectionIn(SubjectRef):
    field: str
    value: str


def _status_doc(rec: dict) -> dict:
    return jsonable({k: rec.get(k) for k in ("request_id", "kind", "status", "confirmation_code", "tenant_id",
                                             "subject_id", "requested_at", "updated_at", "steps")}, str)


def create_app(settings: Settings, service: PrivacyService, tenants: Any, *, reader_factory=None) -> Starlette:
    from wapipe.tenants.auth import Unauthorized, authorize

    async def _auth(request: Request):
        try:
            return authorize(settings, tenants, request, request.path_params["tenant"])
        except Unauthorized as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    async def _body(request: Request, model):
        try:
            return model.model_validate(await request.json())
        except ValueError as exc:  # bad JSON or a failed validation (ValidationError is a ValueError)
            msg = "; ".join(e["msg"] for e in exc.errors()) if isinstance(exc, ValidationError) else "body is not JSON"
            return JSONResponse({"error": msg}, status_code=400)

    async def _scoped(status: int, fn, /, *args, render=_status_doc, **kw) -> JSONResponse:
        """Run a service call for the path's tenant: a subject that is not the tenant's is a 404,
        exactly like one that does not exist; a number without digits is a 400."""
        try:
            out = await asyncio.to_thread(fn, *args, **kw)
        except UnknownSubject:
            return JSONResponse({"error": "no such subject for this tenant"}, status_code=404)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(render(out), status_code=status)

    async def submit(request: Request):
        who = await _auth(request)
        if isinstance(who, JSONResponse):
            return who
        body = await _body(request, RequestIn)
        if isinstance(body, JSONResponse):
            return body
        return await _scoped(202, service.submit, API_KINDS[body.kind.lower()], tenant_id=request.path_params["tenant"],
                             wa_id=body.wa_id, subject=body.subject_id, source="api", actor=who.actor)

    async def correct(request: Request):
        who = await _auth(request)
        if isinstance(who, JSONResponse):
            return who
        body = await _body(request, CorrectionIn)
        if isinstance(body, JSONResponse):
            return body
        return await _scoped(202, service.correct, tenant_id=request.path_params["tenant"], field=body.field,
                             value=body.value, wa_id=body.wa_id, subject=body.subject_id, source="api", actor=who.actor)

    async def status(request: Request):
        who = await _auth(request)
        if isinstance(who, JSONResponse):
            return who
        rec = service.status(request.path_params["code"], tenant_id=request.path_params["tenant"])
        if rec is None:
            return JSONResponse({"error": "no such request for this tenant"}, status_code=404)
        return JSONResponse(_status_doc(rec))

    async def export(request: Request):
        who = await _auth(request)
        if isinstance(who, JSONResponse):
            return who
        tenant = request.path_params["tenant"]
        try:
            ref = SubjectRef(wa_id=request.query_params.get("wa_id"), subject_id=request.query_params.get("subject_id"))
        except ValidationError as exc:
            return JSONResponse({"error": "; ".join(e["msg"] for e in exc.errors())}, status_code=400)

        def owns_number(phone_number_id: str) -> bool:
            t = tenants.tenant_for_number(phone_number_id)
            return t is not None and t.tenant_id == tenant

        return await _scoped(200, service.export, tenant_id=tenant, owns_number=owns_number, wa_id=ref.wa_id,
                             subject=ref.subject_id, reader_factory=reader_factory, source="api", actor=who.actor,
                             render=lambda doc: doc)

    return Starlette(routes=[
        Route("/privacy/{tenant}/requests", submit, methods=["POST"]),
        Route("/privacy/{tenant}/corrections", correct, methods=["POST"]),
        Route("/privacy/{tenant}/requests/{code}", status, methods=["GET"]),
        Route("/privacy/{tenant}/export", export, methods=["GET"]),
    ])


def serve_forever(host: str, port: int) -> None:
    import uvicorn

    from wapipe.kafka import resolve_bootstrap
    from wapipe.net import free_port
    from wapipe.tenants.registry import TenantRegistry

    settings = Settings()
    bootstrap = resolve_bootstrap(settings)
    service = PrivacyService(settings, bootstrap).start()
    tenants = TenantRegistry(settings, bootstrap).start()
    tenants.wait_ready(60)

    def reader():
        from sinks.reader import open_reader

        return open_reader(settings)

    port = port or free_port()
    config = uvicorn.Config(create_app(settings, service, tenants, reader_factory=reader), host=host, port=port,
                            log_level="warning")
    server = uvicorn.Server(config)
    print(f"READY http://{host}:{port}", flush=True)
    try:
        server.run()
    finally:
        tenants.close()
        service.close()
