"""The privacy admin HTTP API (``wapipe privacy serve``), starlette.

Every route is per tenant and needs that tenant's API key or the operator key
(``wapipe.tenants.auth.authorize``: ``Authorization: Bearer <key>`` or ``X-API-Key``):

* ``POST /privacy/{tenant}/requests`` ``{"kind": "erasure|restriction|unrestriction", "wa_id"|"user_id"|"subject_id"}``
  (``user_id``: the person's business-scoped user id, BSUID, for a username user without a number)
  -> 202 ``{request_id, confirmation_code, status}``
* ``POST /privacy/{tenant}/corrections`` ``{"wa_id"|"subject_id", "field", "value"}`` -> 202
* ``GET  /privacy/{tenant}/requests/{code}`` -> the request's status and steps
* ``GET  /privacy/{tenant}/export?wa_id=...`` (or ``user_id=``, ``subject_id=``) -> everything held, as JSON

Every request is an AuditEvent with the caller as actor. Bad input is a 400 with the reason
(not JSON, a field out of its bounds, a path id that is not an id), a body over
``WAPIPE_API_MAX_BODY_BYTES`` a 413: bodies are read by ``wapipe.http_input`` and every field is
bounded here (docs/security.md, "HTTP boundaries").
Every lookup is the path tenant's: a subject id, number or confirmation code that is not the
tenant's is a 404, exactly as if it did not exist (docs/security.md, "Tenant isolation").
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from connectors.meta.bsuid import BSUID_MAX_LENGTH, check_bsuid
from wapipe.config import Settings
from wapipe.http_input import BadInput, check_id, json_body, validation_message
from wapipe.log import get_logger
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest
from wapipe.privacy.errors import UnknownSubject
from wapipe.privacy.export import jsonable
from wapipe.privacy.service import PrivacyService
from wapipe.tenants.models import TENANT_ID_PATTERN

log = get_logger(__name__)

API_KINDS = {"erasure": PrivacyKind.ERASURE, "restriction": PrivacyKind.RESTRICTION,
             "unrestriction": PrivacyKind.UNRESTRICTION}


_TENANT_ID = re.compile(TENANT_ID_PATTERN)
_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a confirmation code or request id
E164_MAX_DIGITS = 15

# A WhatsApp number as people write it (digits, "+", spaces, "()-."), or a subject id (32 hex chars
# from wapipe.privacy.subjects; any id of letters, digits, "_-").
WaId = Annotated[str, Field(max_length=32, pattern=r"^[0-9+ ().-]+$")]
SubjectId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class SubjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    wa_id: WaId | None = None
    user_id: Annotated[str, Field(max_length=BSUID_MAX_LENGTH)] | None = None  # a BSUID, checked below
    subject_id: SubjectId | None = None

    @model_validator(mode="after")
    def _one(self) -> "SubjectRef":
        if not (self.wa_id or self.user_id or self.subject_id):
            raise ValueError("give wa_id (the person's WhatsApp number), user_id (their BSUID) or subject_id")
        if self.wa_id and self.user_id:
            raise ValueError("give wa_id or user_id, not both (a person's number and BSUID are linked already)")
        if self.user_id is not None:
            check_bsuid(self.user_id)
        if self.wa_id and not 1 <= sum(c.isdigit() for c in self.wa_id) <= E164_MAX_DIGITS:
            raise ValueError(f"wa_id must have 1 to {E164_MAX_DIGITS} digits")
        return self

    @property
    def person(self) -> str | None:
        """The number or the BSUID the caller named (``subjects.subject_id`` takes either)."""
        return self.wa_id or self.user_id


class RequestIn(SubjectRef):
    kind: Annotated[str, Field(max_length=32)]

    @model_validator(mode="after")
    def _kind(self) -> "RequestIn":
        if self.kind.lower() not in API_KINDS:
            raise ValueError(f"kind must be one of {', '.join(API_KINDS)} (access: GET .../export)")
        return self


class CorrectionIn(SubjectRef):
    field: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,63}$")]
    value: Annotated[str, Field(max_length=4096)]  # a WhatsApp text body's own limit


def _status_doc(req: PrivacyRequest) -> dict:
    rec = req.to_avro()
    return jsonable({k: rec[k] for k in ("request_id", "kind", "status", "confirmation_code", "tenant_id",
                                             "subject_id", "requested_at", "updated_at", "steps")}, str)


def create_app(settings: Settings, service: PrivacyService, tenants: Any, *, reader_factory=None) -> Starlette:
    from wapipe.tenants.auth import Unauthorized, authorize

    async def _auth(request: Request):
        try:
            who = authorize(settings, tenants, request, request.path_params["tenant"])
            check_id(request.path_params["tenant"], _TENANT_ID, "tenant")
            if "code" in request.path_params:
                check_id(request.path_params["code"], _CODE, "code")
            return who
        except Unauthorized as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except BadInput as exc:
            return exc.response()

    async def _body(request: Request, model):
        try:
            return await json_body(request, model, settings.api_max_body_bytes)
        except BadInput as exc:
            return exc.response()

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
                             wa_id=body.person, subject=body.subject_id, source="api", actor=who.actor)

    async def correct(request: Request):
        who = await _auth(request)
        if isinstance(who, JSONResponse):
            return who
        body = await _body(request, CorrectionIn)
        if isinstance(body, JSONResponse):
            return body
        return await _scoped(202, service.correct, tenant_id=request.path_params["tenant"], field=body.field,
                             value=body.value, wa_id=body.person, subject=body.subject_id, source="api", actor=who.actor)

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
            ref = SubjectRef(wa_id=request.query_params.get("wa_id"), user_id=request.query_params.get("user_id"),
                             subject_id=request.query_params.get("subject_id"))
        except ValidationError as exc:
            return JSONResponse({"error": validation_message(exc)}, status_code=400)

        def owns_number(phone_number_id: str) -> bool:
            t = tenants.tenant_for_number(phone_number_id)
            return t is not None and t.tenant_id == tenant

        return await _scoped(200, service.export, tenant_id=tenant, owns_number=owns_number, wa_id=ref.person,
                             subject=ref.subject_id, reader_factory=reader_factory, source="api", actor=who.actor,
                             render=lambda doc: doc)

    return Starlette(routes=[
        Route("/privacy/{tenant}/requests", submit, methods=["POST"]),
        Route("/privacy/{tenant}/corrections", correct, methods=["POST"]),
        Route("/privacy/{tenant}/requests/{code}", status, methods=["GET"]),
        Route("/privacy/{tenant}/export", export, methods=["GET"]),
    ])
