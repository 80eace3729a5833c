"""Meta's data-deletion and deauthorize callbacks, and the deletion-status page.

Both callbacks are a form POST with ``signed_request``. A valid one becomes a ``PrivacyRequest``
(status RECEIVED) on ``wa.privacy.requests`` — where the privacy processors pick it up and write
its progress — plus an ``AuditEvent``, both acked before we answer. The data-deletion answer is
Meta's ``{"url", "confirmation_code"}``; the URL shows the request's current state.

Refusals: a form over ``MAX_FORM_BYTES`` → 413; a signed_request whose signature does not match →
401; any other invalid one (not ``<sig>.<payload>``, not base64url or JSON, another algorithm,
expired, no usable ``user_id``) → 400 with the reason. Nothing is written for a refused request.
"""

from __future__ import annotations

import asyncio
import html
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from producers.ingress import signed_request
from producers.ingress.metrics import IngressMetrics
from producers.ingress.privacy_status import PrivacyStatusView
from wapipe.avro import AvroSerde
from wapipe.http_input import BadInput, read_body
from wapipe.log import get_logger
from wapipe.messages.privacy import PrivacyKind, PrivacyRequest, PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.publisher import KafkaPublisher, PublishFailed
from wapipe.topics import AUDIT, PRIVACY_REQUESTS

log = get_logger(__name__)

MAX_FORM_BYTES = 64 * 1024
_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # confirmation codes are hex (here and wapipe/privacy/records.py)
STATUS_PATH = "/meta/deletion-status/"
STATUS_WAIT_S = 1.0


def confirmation_code() -> str:
    return secrets.token_hex(8).upper()


class MetaCallbacks:
    def __init__(self, *, secrets: Mapping[str, bytes], publisher: KafkaPublisher, serde: AvroSerde,
                 view: PrivacyStatusView, metrics: IngressMetrics, public_base_url: str | None,
                 max_age_s: int) -> None:
        self._secrets = dict(secrets)
        self._publisher = publisher
        self._serde = serde
        self._view = view
        self._metrics = metrics
        self._base = public_base_url.rstrip("/") if public_base_url else None
        self._max_age = max_age_s

    async def data_deletion(self, request: Request) -> Response:
        return await self._record(request, kind=PrivacyKind.ERASURE, source="meta_deletion_callback",
                                  endpoint="deletion")

    async def deauthorize(self, request: Request) -> Response:
        return await self._record(request, kind=PrivacyKind.DISCONNECT, source="meta_deauthorize",
                                  endpoint="deauthorize")

    async def status(self, request: Request) -> Response:
        code = request.path_params["code"]
        if not _CODE.fullmatch(code):  # not a code we issue: no wait for the view to catch up
            return JSONResponse({"error": "unknown confirmation code"}, status_code=404)
        rec = self._view.get(code)
        # Another worker may have written it a moment ago: give our consumer a moment to read it.
        deadline = time.monotonic() + STATUS_WAIT_S
        while rec is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            rec = self._view.get(code)
        if rec is None or rec.tenant_id:
            # A tenant's request (API/CLI) is the tenant's to look up (privacy API, scoped by its key):
            # this public page answers only the requests Meta's callbacks made, and a tenant's code
            # is answered like an unknown one (docs/security.md, "Tenant isolation").
            return JSONResponse({"error": "unknown confirmation code"}, status_code=404)
        doc = {
            "confirmation_code": rec.confirmation_code,
            "kind": str(rec.kind),
            "status": str(rec.status),
            "requested_at": _iso(rec.requested_at),
            "updated_at": _iso(rec.updated_at),
            "steps": rec.steps,
        }
        if "text/html" in request.headers.get("accept", ""):
            rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in doc.items())
            return HTMLResponse(f"<!doctype html><title>Deletion request {html.escape(code)}</title>"
                                f"<h1>Your data deletion request</h1><table>{rows}</table>")
        return JSONResponse(doc)

    # ---------------------------------------------------------------------------------------
    async def _record(self, request: Request, *, kind: PrivacyKind, source: str, endpoint: str) -> Response:
        m = self._metrics
        try:
            raw = await read_body(request, MAX_FORM_BYTES)
        except BadInput as exc:
            m.requests.labels(endpoint, "too_large").inc()
            return exc.response()
        form = parse_qs(raw.decode("utf-8", "replace"))
        try:
            sr = signed_request.parse(form.get("signed_request", [None])[0], self._secrets, max_age_s=self._max_age)
        except signed_request.InvalidSignedRequest as exc:
            reason = str(exc)
            bad_sig = reason == "bad signature"
            m.requests.labels(endpoint, "bad_signature" if bad_sig else "invalid").inc()
            if bad_sig:
                m.signature_rejects.labels(endpoint, "mismatch").inc()
            log.info("signed_request refused", endpoint=endpoint, reason=reason)
            return JSONResponse({"error": f"invalid signed_request: {reason}"}, status_code=401 if bad_sig else 400)

        now = int(time.time() * 1000)
        request_id = uuid.uuid4().hex
        code = confirmation_code()
        record = PrivacyRequest(
            request_id=request_id, kind=kind, meta_user_id=sr.user_id, source=source, status=PrivacyStatus.RECEIVED,
            confirmation_code=code, requested_at=at_ms(now), updated_at=at_ms(now),
            details={"app_id": sr.app_id, **({"issued_at": str(sr.issued_at)} if sr.issued_at else {})})
        audit = {
            "event_id": uuid.uuid4().hex, "occurred_at": now, "actor": "meta", "tenant_id": None,
            "subject_id": None, "action": f"privacy.{kind.lower()}.requested", "target": request_id,
            "outcome": "ok", "details": {"source": source, "confirmation_code": code, "app_id": sr.app_id},
        }
        value = self._serde.encode("PrivacyRequest", record.to_avro(), topic=PRIVACY_REQUESTS)
        try:
            await asyncio.gather(
                self._publisher.publish(PRIVACY_REQUESTS, value, request_id.encode()),
                self._publisher.publish(AUDIT, self._serde.encode("AuditEvent", audit, topic=AUDIT), None),
            )
        except PublishFailed as exc:
            m.requests.labels(endpoint, "unavailable").inc()
            log.warning("privacy request not acked, answering 503", endpoint=endpoint, reason=str(exc))
            return JSONResponse({"error": "temporarily unavailable"}, status_code=503, headers={"retry-after": "1"})
        self._view.remember(record)
        m.requests.labels(endpoint, "recorded").inc()
        log.info("privacy request recorded", kind=kind, source=source, request_id=request_id, app_id=sr.app_id)
        base = self._base or str(request.base_url).rstrip("/")
        return JSONResponse({"url": f"{base}{STATUS_PATH}{code}", "confirmation_code": code})


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()
