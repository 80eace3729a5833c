"""The Graph API surface of the sandbox: ``/{version}/...`` routes answering like Meta.

Every Graph call waits the configured latency (``asyncio.sleep``: it never blocks the loop) after
its decision. Sends additionally pass through fault injection: an injected 5xx is answered before
anything is sent; an injected timeout or connection reset happens *after* the send was decided,
so the message counts as sent — the client sees an unknown outcome, as it would with Meta.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from urllib.parse import parse_qs
import struct

from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.meta.sandbox.engine import Sandbox, dumps, version_major
from connectors.meta.sandbox.graph_errors import GraphError, unknown_object
from connectors.meta.sandbox.media import MAX_UPLOAD_BYTES

_MESSAGES = re.compile(r"^/([^/]+)/([^/]+)/messages$")
_JSON = "application/json"


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    if auth and auth[:6].lower() == "oauth ":  # the Resumable Upload API's scheme
        return auth[6:].strip()
    return request.query_params.get("access_token")


def _ok(obj: object, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type=_JSON)


def _err(e: GraphError) -> Response:
    return Response(e.encode(), status_code=e.status(), media_type=_JSON,
                    headers={"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'} if e.code == 190 else None)


async def _json(request: Request) -> dict:
    raw = await request.body()
    if not raw:
        return {}
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        return {k: v for k, v in form.items()}
    try:
        body = json.loads(raw)
    except ValueError as e:
        raise GraphError(100, message="(#100) The request body could not be parsed as JSON.", details=str(e)) from e
    if not isinstance(body, dict):
        raise GraphError(100, message="(#100) The request body must be a JSON object.")
    return body


def _int_param(q, name: str, default: int) -> int:
    try:
        return int(q.get(name, default))
    except ValueError as e:
        raise GraphError(100, message=f"(#100) Param {name} must be an integer") from e


def _reset(send) -> None:
    """Abort the client's connection with a TCP RST (SO_LINGER 0), like a dropped connection.
    ``send`` is the server's own ASGI send (uvicorn's, bound to the connection's transport)."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class GraphApi:
    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox

    def routes(self) -> list[Route]:
        return [
            Route("/oauth/access_token", self.access_token, methods=["GET", "POST"]),
            Route("/{version}/oauth/access_token", self.access_token, methods=["GET", "POST"]),
            Route("/{version}/debug_token", self.debug_token, methods=["GET"]),
            Route("/{version}/{node}/register", self.register, methods=["POST"]),
            Route("/{version}/{node}/phone_numbers", self.phone_numbers, methods=["GET"]),
            Route("/{version}/{node}/message_templates", self.templates, methods=["GET", "POST", "DELETE"]),
            Route("/{version}/{node}/subscribed_apps", self.subscribed_apps, methods=["GET", "POST", "DELETE"]),
            Route("/{version}/{node}/media", self.upload_media, methods=["POST"]),
            Route("/{version}/{node}/uploads", self.start_upload, methods=["POST"]),
            Route("/whatsapp_business/attachments/", self.download, methods=["GET"]),
            Route("/{version}/{node}", self.node, methods=["GET", "POST", "DELETE"]),
            Route("/{path:path}", self.unknown, methods=["GET", "POST", "DELETE", "PUT", "PATCH"]),
        ]

    async def _latency(self) -> None:
        d = self.sb.config.latency
        if d.a > 0 or d.b > 0:
            await asyncio.sleep(d.sample_s(self.sb.rng))

    # --- messages: the hot path (served by ``FastMessages``, below) ---------------------------------
    async def handle_messages(self, version: str, node: str, token: str | None, raw: bytes,
                              reset) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        sb = self.sb
        fault: str | None = None
        extra: list[tuple[bytes, bytes]] = []
        try:
            major = version_major(version)
            number = sb.number_for(sb.auth(token), node)
            fault = sb.pick_fault(number.id)
            if fault == "error":
                raise sb.count_rejected(number, sb.fault_error())
            try:
                body = json.loads(raw)
            except ValueError as e:
                raise GraphError(100, message="(#100) The request body could not be parsed as JSON.") from e
            if isinstance(body, dict) and body.get("status") == "read":
                sb.mark_read(number, body)
                status, out = 200, b'{"success":true}'
            else:
                acc = sb.send(number, body, raw, major)
                status, out = 200, dumps({
                    "messaging_product": "whatsapp", "contacts": [acc.contact()],
                    "messages": [{"id": acc.wamid, "message_status": acc.message_status}]})
        except GraphError as e:
            status, out = e.status(), e.encode()
            if e.code == 190:
                extra.append((b"www-authenticate", b'OAuth "Facebook Platform" "invalid_token"'))
        await self._latency()
        if fault == "timeout":
            await asyncio.sleep(sb.faults.timeout_hold_s)
        elif fault == "reset":
            reset()
            await asyncio.sleep(0)
        return status, out, extra

    # --- management -----------------------------------------------------------------------------
    async def _answer(self, fn) -> Response:
        try:
            result = await fn()
            resp = _ok(result)
        except GraphError as e:
            resp = _err(e)
        await self._latency()
        return resp

    async def register(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            number = self.sb.number_for(self.sb.auth(_token(request)), request.path_params["node"], manage=True)
            self.sb.register(number, await _json(request))
            return {"success": True}
        return await self._answer(go)

    async def phone_numbers(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            waba = self.sb.waba_for(self.sb.auth(_token(request)), request.path_params["node"], manage=True)
            fields = request.query_params.get("fields")
            data = [self.sb.number_fields(n, fields) for n in self.sb.world.numbers.values() if n.waba_id == waba.id]
            return {"data": data, "paging": {"cursors": {"before": "QVFIUk", "after": "QVFIUl"}}}
        return await self._answer(go)

    async def node(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            node = request.path_params["node"]
            if node.startswith("upload:"):
                return await self._upload_session(request, node)
            token = self.sb.auth(_token(request))
            if node in self.sb.media.media or request.method == "DELETE":
                return self._media_node(request, token, node)
            if request.method != "GET":
                raise unknown_object(node)
            if node in self.sb.world.numbers:
                return self.sb.number_fields(self.sb.number_for(token, node, manage=True),
                                             request.query_params.get("fields"))
            waba = self.sb.waba_for(token, node, manage=True)
            biz = self.sb.world.businesses[waba.business_id]
            return {"id": waba.id, "name": waba.name, "owner_business_info": {"id": biz.id, "name": biz.name},
                    "currency": "USD", "timezone_id": "1", "message_template_namespace": "sandbox_" + waba.id}
        return await self._answer(go)

    # --- media ---------------------------------------------------------------------------------
    def _media_node(self, request: Request, token, media_id: str) -> dict:
        if request.method == "POST":
            raise unknown_object(media_id)
        pnid = request.query_params.get("phone_number_id")
        m = self.sb.media.get(media_id, token.may_use)
        if pnid is not None and pnid != m.phone_number_id:
            raise unknown_object(media_id)
        if request.method == "DELETE":
            self.sb.media.delete(media_id, token.may_use)
            return {"success": True}
        return self.sb.media.info(m, str(request.base_url).rstrip("/"), self.sb.config.media_url_ttl_s)

    async def upload_media(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            number = self.sb.number_for(self.sb.auth(_token(request)), request.path_params["node"])
            if not request.headers.get("content-type", "").startswith("multipart/form-data"):
                raise GraphError(100, message="(#100) The request must be multipart/form-data with a file")
            declared = request.headers.get("content-length", "")
            if not declared.isdigit() or int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:  # + the form's framing
                raise GraphError(131053, details=f"the body must declare a Content-Length of at most "
                                                 f"{MAX_UPLOAD_BYTES} bytes of file")
            try:
                form = await request.form(max_files=1, max_fields=10)
            except (MultiPartException, HTTPException, ValueError, KeyError) as e:
                # Starlette answers a malformed multipart body with its own plain-text 400: say it Meta's way.
                raise GraphError(100, message="(#100) The multipart body could not be parsed",
                                 details=str(getattr(e, "detail", e))[:200]) from None
            try:
                if form.get("messaging_product") != "whatsapp":
                    raise GraphError(100, message="(#100) The parameter messaging_product is required.")
                upload = form.get("file")
                if upload is None or isinstance(upload, str):
                    raise GraphError(100, message="(#100) The parameter file is required.")
                mime = form.get("type") or upload.content_type or ""
                if not isinstance(mime, str) or not mime:
                    raise GraphError(100, message="(#100) The parameter type is required.")
                content = await upload.read()
            finally:
                await form.close()
            return {"id": self.sb.add_media(number, mime, content).id}
        return await self._answer(go)

    async def download(self, request: Request) -> Response:
        q = request.query_params
        try:
            m = self.sb.media.download(q.get("mid"), q.get("ext"), q.get("hash"), self.sb.auth(_token(request)).may_use)
        except GraphError as e:
            await self._latency()
            return _err(e)
        await self._latency()
        return Response(m.content, media_type=m.mime_type)

    async def start_upload(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            app_id = self.sb.app_from_token(_token(request))
            if app_id != request.path_params["node"]:
                raise unknown_object(request.path_params["node"])
            q = request.query_params
            return {"id": self.sb.media.start(app_id, q.get("file_name"), q.get("file_length"), q.get("file_type")).id}
        return await self._answer(go)

    async def _upload_session(self, request: Request, sid: str) -> dict:
        # Meta's session ids carry a signature as a query string ("upload:…?sig=…"): the route sees
        # only the path part, which is the sandbox's whole id.
        session = self.sb.media.session(sid, self.sb.app_from_token(_token(request)))
        if request.method == "GET":
            return {"id": session.id, "file_offset": len(session.data)}
        if request.method != "POST":
            raise unknown_object(sid)
        return self.sb.media.chunk(session, request.headers.get("file_offset"), await request.body())

    async def templates(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            waba = self.sb.waba_for(self.sb.auth(_token(request)), request.path_params["node"], manage=True)
            q = request.query_params
            if request.method == "GET":
                data = [t.as_graph() for t in self.sb.world.templates.values() if t.waba_id == waba.id
                        and (not q.get("name") or t.name == q["name"])
                        and (not q.get("status") or t.status == q["status"])]
                limit = _int_param(q, "limit", 1000)
                return {"data": data[:limit], "paging": {"cursors": {"before": "MAZDZD", "after": "MjQZD"}}}
            if request.method == "POST":
                t = self.sb.create_template(waba, await _json(request))
                return {"id": t.id, "status": t.status, "category": t.category}
            self.sb.delete_template(waba, q.get("name"), q.get("hsm_id"))
            return {"success": True}
        return await self._answer(go)

    async def subscribed_apps(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            token = self.sb.auth(_token(request))
            waba = self.sb.waba_for(token, request.path_params["node"], manage=True)
            world = self.sb.world
            if request.method == "GET":
                ids = waba.subscribed_apps if waba.subscribed_apps is not None else list(world.apps)
                return {"data": [{"whatsapp_business_api_data": {"id": i, "name": world.apps[i].name,
                                                                  "link": f"https://www.facebook.com/games/?app_id={i}"}}
                                 for i in ids if i in world.apps]}
            if token.app_id is None:
                raise GraphError(100, message="(#100) An app is required to subscribe to this WABA.")
            current = list(waba.subscribed_apps if waba.subscribed_apps is not None else world.apps)
            if request.method == "POST":
                if token.app_id not in current:
                    current.append(token.app_id)
            else:
                current = [i for i in current if i != token.app_id]
            waba.subscribed_apps = current
            return {"success": True}
        return await self._answer(go)

    async def access_token(self, request: Request) -> Response:
        async def go():
            q = dict(request.query_params)
            if request.method == "POST":
                q.update(await _json(request))
            token = self.sb.exchange(q.get("client_id"), q.get("client_secret"), q.get("code"))
            return {"access_token": token, "token_type": "bearer"}
        return await self._answer(go)

    async def debug_token(self, request: Request) -> Response:
        async def go():
            version_major(request.path_params["version"])
            app_id = self.sb.app_from_token(_token(request))
            return self.sb.debug(app_id, request.query_params.get("input_token"))
        return await self._answer(go)

    async def unknown(self, request: Request) -> Response:
        path = "/" + request.path_params["path"]
        return _err(GraphError(100, message=f"Unknown path components: {path}") if path.count("/") > 3
                    else unknown_object(path.rsplit("/", 1)[-1]))


class FastMessages:
    """Outermost ASGI layer serving ``POST /{version}/{phone_number_id}/messages`` directly — the
    path a benchmark pushes thousands of times a second — without routing, middleware or Request
    objects; everything else goes to the Starlette app. It also holds uvicorn's own ``send``, which
    an injected connection reset needs."""

    def __init__(self, app, graph: GraphApi) -> None:
        self.app = app
        self.graph = graph

    async def __call__(self, scope, receive, send) -> None:
        m = _MESSAGES.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if m is None:
            await self.app(scope, receive, send)
            return
        chunks = []
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body"):
                break
        token = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                val = v.decode("latin-1")
                if val[:7].lower() == "bearer ":
                    token = val[7:].strip()
                break
        if token is None and scope.get("query_string"):
            token = (parse_qs(scope["query_string"].decode("latin-1")).get("access_token") or [None])[0]
        status, body, extra = await self.graph.handle_messages(m.group(1), m.group(2), token, b"".join(chunks),
                                                               lambda: _reset(send))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *extra]})
        await send({"type": "http.response.body", "body": body})
