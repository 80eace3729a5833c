"""The control API under ``/_sandbox``: what a test, benchmark or demo uses to shape the simulated
Meta (seed, config, faults), to make things happen (inbound messages, template and number changes,
signup codes) and to read what happened (counters, accepted messages, pending webhooks).

Bad input answers 422 with the validation errors; an unknown id answers 404.
"""

from __future__ import annotations

import json
import secrets

import httpx
from pydantic import BaseModel, ValidationError, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.meta.sandbox.engine import Sandbox, decode_b64, dumps
from connectors.meta.sandbox.graph_errors import GraphError
from connectors.meta.sandbox.models import (AccountUpdate, AppSeed, _http_url, BusinessChange, Faults, InboundRequest, MediaUpload, NumberChange, Seed,
                                            SignupCodeRequest, TemplateStatusChange, UserPreferenceRequest)


def _ok(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def _problem(status: int, detail: object) -> Response:
    return _ok({"error": detail}, status)


class WebhookTarget(BaseModel):
    url: str | None
    app_id: str | None = None
    app_secret: str | None = None
    verify_token: str | None = None

    _check_url = field_validator("url")(_http_url)


async def _verify_callback(url: str, verify_token: str) -> str | None:
    """None when the endpoint echoed the challenge, else what went wrong."""
    challenge = secrets.token_hex(8)
    try:
        async with httpx.AsyncClient(timeout=5.0) as client:
            r = await client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": verify_token,
                                              "hub.challenge": challenge})
    except (httpx.HTTPError, httpx.InvalidURL) as e:
        return f"{type(e).__name__}: {e}"
    if r.status_code != 200:
        return f"HTTP {r.status_code}"
    if r.text.strip() != challenge:
        return "the response did not match the challenge"
    return None


class ControlApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def routes(self) -> list[Route]:
        r = Route
        return [
            r("/_sandbox/health", self.health, methods=["GET"]),
            r("/_sandbox/seed", self.seed, methods=["POST"]),
            r("/_sandbox/state", self.state, methods=["GET"]),
            r("/_sandbox/config", self.config, methods=["GET", "PATCH"]),
            r("/_sandbox/webhook", self.webhook, methods=["PUT"]),
            r("/_sandbox/faults", self.faults, methods=["GET", "PUT", "DELETE"]),
            r("/_sandbox/inbound", self.inbound, methods=["POST"]),
            r("/_sandbox/media", self.media, methods=["POST"]),
            r("/_sandbox/templates/{waba_id}/{name}/{language}/status", self.template_status, methods=["POST"]),
            r("/_sandbox/numbers/{number_id}", self.number, methods=["PATCH"]),
            r("/_sandbox/businesses/{business_id}", self.business, methods=["PATCH"]),
            r("/_sandbox/account_update", self.account_update, methods=["POST"]),
            r("/_sandbox/user_preferences", self.user_preferences, methods=["POST"]),
            r("/_sandbox/invalid_recipients", self.invalid_recipients, methods=["POST", "DELETE"]),
            r("/_sandbox/tokens/{token}/revoke", self.revoke, methods=["POST"]),
            r("/_sandbox/signup_codes", self.signup_code, methods=["POST"]),
            r("/_sandbox/counters", self.counters, methods=["GET"]),
            r("/_sandbox/counters/reset", self.reset_counters, methods=["POST"]),
            r("/_sandbox/messages", self.messages, methods=["GET"]),
            r("/_sandbox/reads", self.reads, methods=["GET"]),
            r("/_sandbox/webhooks/pending", self.pending, methods=["GET"]),
        ]

    async def _call(self, request: Request, model: type[BaseModel] | None, fn) -> Response:
        try:
            payload = None
            if model is not None:
                raw = await request.body()
                payload = model.model_validate_json(raw or b"{}")
            return _ok(fn(payload))
        except ValidationError as e:
            return _problem(422, json.loads(e.json(include_url=False)))
        except KeyError as e:
            return _problem(404, str(e.args[0]) if e.args else "not found")
        except GraphError as e:
            return _problem(422, e.details or str(e))
        except ValueError as e:
            return _problem(422, str(e))

    async def health(self, request: Request) -> Response:
        return _ok({"ok": True})

    async def seed(self, request: Request) -> Response:
        def go(seed: Seed) -> dict:
            self.sb.load(seed)
            return self.sb.world.snapshot()
        return await self._call(request, Seed, go)

    async def state(self, request: Request) -> Response:
        return _ok(self.sb.world.snapshot())

    async def config(self, request: Request) -> Response:
        if request.method == "GET":
            return _ok(self.sb.config.model_dump())
        try:
            patch = json.loads(await request.body() or b"{}")
            if not isinstance(patch, dict):
                raise ValueError("the config patch must be a JSON object")
            return _ok(self.sb.patch_config(patch).model_dump())
        except ValidationError as e:
            return _problem(422, json.loads(e.json(include_url=False)))
        except ValueError as e:
            return _problem(422, str(e))

    async def webhook(self, request: Request) -> Response:
        """Set an app's callback URL. With ``verify_token``, first do what Meta's dashboard does: a
        ``GET ?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`` that must echo the challenge."""
        try:
            t = WebhookTarget.model_validate_json(await request.body() or b"{}")
        except ValidationError as e:
            return _problem(422, json.loads(e.json(include_url=False)))
        if t.url and t.verify_token is not None:
            failure = await _verify_callback(t.url, t.verify_token)
            if failure:
                return _problem(422, f"callback URL could not be validated: {failure}")

        def go(_: None) -> dict:
            apps = self.sb.world.apps
            app_id = t.app_id or (next(iter(apps)) if apps else "sandbox-app")
            app = apps.get(app_id)
            if app is None:
                if not t.app_secret:
                    raise ValueError(f"app {app_id} is new: app_secret is required")
                self.sb.world.apply(Seed(apps=[AppSeed(id=app_id, secret=t.app_secret, webhook_url=t.url)]), 1.0)
            else:
                app.webhook_url = t.url
                if t.app_secret:
                    app.secret = t.app_secret
            return {"app_id": app_id, "url": t.url, "verified": t.verify_token is not None and bool(t.url)}
        return await self._call(request, None, go)

    async def faults(self, request: Request) -> Response:
        if request.method == "GET":
            return _ok(self.sb.faults.model_dump())
        if request.method == "DELETE":
            self.sb.set_faults(Faults())
            return _ok(self.sb.faults.model_dump())

        def go(f: Faults) -> dict:
            self.sb.set_faults(f)
            return f.model_dump()
        return await self._call(request, Faults, go)

    async def inbound(self, request: Request) -> Response:
        return await self._call(request, InboundRequest, lambda r: {"wamid": self.sb.inbound(r)})

    async def media(self, request: Request) -> Response:
        def go(u: MediaUpload) -> dict:
            number = self.sb.world.numbers.get(u.phone_number_id)
            if number is None:
                raise KeyError(f"unknown phone number {u.phone_number_id}")
            m = self.sb.add_media(number, u.mime_type, decode_b64(u.content_b64))
            return {"id": m.id, "sha256": m.sha256_hex, "file_size": len(m.content)}
        return await self._call(request, MediaUpload, go)

    async def template_status(self, request: Request) -> Response:
        p = request.path_params

        def go(c: TemplateStatusChange) -> dict:
            t = self.sb.change_template(p["waba_id"], p["name"], p["language"], c)
            return t.as_graph()
        return await self._call(request, TemplateStatusChange, go)

    async def number(self, request: Request) -> Response:
        def go(c: NumberChange) -> dict:
            n = self.sb.change_number(request.path_params["number_id"], c)
            return self.sb.number_fields(n, "quality_rating,throughput,whatsapp_business_manager_messaging_limit")
        return await self._call(request, NumberChange, go)

    async def business(self, request: Request) -> Response:
        def go(c: BusinessChange) -> dict:
            self.sb.change_business(request.path_params["business_id"], c)
            return {"id": request.path_params["business_id"], "tier": c.tier}
        return await self._call(request, BusinessChange, go)

    async def account_update(self, request: Request) -> Response:
        def go(a: AccountUpdate) -> dict:
            self.sb.account_update(a.waba_id, a.event, a.details)
            return {"scheduled": True}
        return await self._call(request, AccountUpdate, go)

    async def user_preferences(self, request: Request) -> Response:
        """A user stops or resumes marketing messages: the signed user_preferences webhook follows."""
        return await self._call(request, UserPreferenceRequest, self.sb.user_preference)

    async def invalid_recipients(self, request: Request) -> Response:
        class Body(BaseModel):
            wa_ids: list[str]

        def go(b: Body) -> dict:
            s = self.sb.world.invalid_recipients
            if request.method == "POST":
                s.update(b.wa_ids)
            else:
                s.difference_update(b.wa_ids)
            return {"invalid_recipients": sorted(s)}
        return await self._call(request, Body, go)

    async def revoke(self, request: Request) -> Response:
        def go(_: None) -> dict:
            t = self.sb.world.tokens[request.path_params["token"]]
            t.valid = False
            return {"revoked": True}
        return await self._call(request, None, go)

    async def signup_code(self, request: Request) -> Response:
        def go(r: SignupCodeRequest) -> dict:
            c = self.sb.new_code(r)
            return {"code": c.code, "expires_in": self.sb.config.limits.signup_code_ttl_s}
        return await self._call(request, SignupCodeRequest, go)

    async def counters(self, request: Request) -> Response:
        snap = self.sb.counters.snapshot(series=request.query_params.get("series") in ("1", "true"))
        snap["webhooks"]["pending"] = self.sb.dispatcher.pending
        return _ok(snap)

    async def reset_counters(self, request: Request) -> Response:
        from connectors.meta.sandbox.state import Counters

        self.sb.counters = Counters()
        self.sb.dispatcher.counters = self.sb.counters
        return _ok({"reset": True})

    async def messages(self, request: Request) -> Response:
        q = request.query_params
        msgs = self.sb.counters.messages
        if q.get("phone_number_id"):
            msgs = [m for m in msgs if m["phone_number_id"] == q["phone_number_id"]]
        try:
            offset, limit = int(q.get("offset", 0)), int(q.get("limit", 100_000))
        except ValueError:
            return _problem(422, "offset and limit must be integers")
        return _ok({"total": len(msgs), "messages": msgs[offset:offset + limit]})

    async def reads(self, request: Request) -> Response:
        """Read receipts the numbers sent (``status: read``), oldest first."""
        pnid = request.query_params.get("phone_number_id")
        return _ok({"reads": [r for r in self.sb.world.reads if not pnid or r["phone_number_id"] == pnid]})

    async def pending(self, request: Request) -> Response:
        return _ok({"pending": self.sb.dispatcher.pending})
