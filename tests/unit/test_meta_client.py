"""GraphClient: request shapes, reply parsing, error typing, timeouts, pooling, no token leaks.

Meta's HTTP side is played by ``httpx.MockTransport`` handlers (request/answer shapes) and, for
timeouts, resets and connection reuse, by a tiny real HTTP/1.1 server on 127.0.0.1 — the client
under test always runs its real code paths.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import traceback
from collections.abc import Callable

import httpx
import pytest

from connectors.meta import errors as E
from connectors.meta.client import CallTiming, GraphClient, PhoneNumberInfo
from connectors.meta.messages import TextMessage

TOKEN = "EAAG-super-secret-token-0123456789"
PNID = "106540352242922"
WABA = "102290129340398"

SEND_OK = {
    "messaging_product": "whatsapp",
    "contacts": [{"input": "+16505551234", "wa_id": "16505551234"}],
    "messages": [{"id": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA", "message_status": "accepted"}],
}


def meta_error(code: int, message: str = "(#x) error", **extra) -> dict:
    return {"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Az8or2yhqkZ", **extra}}


class Recorder:
    """A MockTransport handler that records requests and answers from a route table."""

    def __init__(self, routes: dict[tuple[str, str], Callable[[httpx.Request], httpx.Response] | httpx.Response]):
        self.routes = routes
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.routes.get((request.method, request.url.path))
        if answer is None:
            return httpx.Response(400, json=meta_error(100, "Unsupported request"))
        return answer(request) if callable(answer) else answer

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def client_for(handler, **kwargs) -> GraphClient:
    return GraphClient("https://graph.example.test", "v23.0", transport=httpx.MockTransport(handler), **kwargs)


# --- sending -------------------------------------------------------------------------------------
async def test_send_message_model():
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json=SEND_OK)})
    msg = TextMessage(to="+16505551234", body="Your order shipped", biz_opaque_callback_data="cmd-1")
    async with client_for(rec) as graph:
        accepted = await graph.send_message(PNID, msg, token=TOKEN)
    assert accepted.wamid == SEND_OK["messages"][0]["id"]
    assert (accepted.message_status, accepted.wa_id, accepted.input) == ("accepted", "16505551234", "+16505551234")
    req = rec.last
    assert req.url.host == "graph.example.test" and req.headers["authorization"] == f"Bearer {TOKEN}"
    assert req.headers["content-type"] == "application/json"
    assert json.loads(req.content) == msg.to_request()


async def test_send_message_dict_and_held_status():
    reply = {**SEND_OK, "messages": [{"id": "wamid.A", "message_status": "held_for_quality_assessment"}]}
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json=reply)})
    body = {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "hi"}}
    async with client_for(rec) as graph:
        accepted = await graph.send_message(PNID, body, token=TOKEN)
    assert accepted.message_status == "held_for_quality_assessment"
    assert json.loads(rec.last.content) == body


async def test_send_200_without_wamid_is_unknown_outcome():
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json={"messaging_product": "whatsapp"})})
    async with client_for(rec) as graph:
        with pytest.raises(E.UnknownOutcome):
            await graph.send_message(PNID, TextMessage(to="16505551234", body="x"), token=TOKEN)


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (400, meta_error(130429, "(#130429) Rate limit hit"), E.Throttled, 130429),
        (429, meta_error(130429, "(#130429) Rate limit hit"), E.Throttled, 130429),
        (400, meta_error(131056, "(#131056) Pair rate limit hit"), E.PairRateLimited, 131056),
        (429, meta_error(131056, "(#131056) Pair rate limit hit"), E.PairRateLimited, 131056),
        (400, meta_error(131048, "(#131048) Spam rate limit hit"), E.SpamLimited, 131048),
        (400, meta_error(131047, "(#131047) Re-engagement message"), E.WindowClosed, 131047),
        (404, meta_error(132001, "(#132001) Template name does not exist in the translation"), E.TemplateError, 132001),
        (400, meta_error(131026, "(#131026) Message undeliverable"), E.RecipientError, 131026),
        (401, meta_error(190, "Error validating access token", error_subcode=463), E.AuthError, 190),
        (500, meta_error(2, "Service temporarily unavailable"), E.Transient, 2),
        (503, None, E.Transient, None),
    ],
)
async def test_send_error_bodies(status, body, cls, code):
    answer = httpx.Response(status, json=body) if body else httpx.Response(status, text="upstream unavailable")
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): answer})
    async with client_for(rec) as graph:
        with pytest.raises(E.MetaError) as info:
            await graph.send_message(PNID, TextMessage(to="16505551234", body="x"), token=TOKEN)
    err = info.value
    assert type(err) is cls and err.code == code and err.http_status == status
    assert err.endpoint == "POST /{phone_number_id}/messages"
    if body:
        assert err.fbtrace_id == "Az8or2yhqkZ"


async def test_mark_read():
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json={"success": True})})
    async with client_for(rec) as graph:
        assert await graph.mark_read(PNID, "wamid.IN", token=TOKEN) is True
    assert json.loads(rec.last.content) == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.IN"}


# --- templates, numbers, onboarding -----------------------------------------------------------------
async def test_list_templates_follows_cursors():
    pages = {
        None: {"data": [{"name": "a", "language": "en_US", "status": "APPROVED", "category": "UTILITY", "id": "1"}],
               "paging": {"cursors": {"before": "B1", "after": "A1"}, "next": "https://graph/next?after=A1"}},
        "A1": {"data": [{"name": "b", "language": "de", "status": "PAUSED", "category": "MARKETING", "id": "2",
                         "components": [{"type": "BODY", "text": "Hallo {{1}}"}]}],
               "paging": {"cursors": {"before": "B2", "after": "A2"}}},
    }

    def handler(request):
        return httpx.Response(200, json=pages[request.url.params.get("after")])

    rec = Recorder({("GET", f"/v23.0/{WABA}/message_templates"): handler})
    async with client_for(rec) as graph:
        templates = await graph.list_templates(WABA, token=TOKEN, status="APPROVED")
    assert [(t.name, t.language, t.status, t.id) for t in templates] == [("a", "en_US", "APPROVED", "1"), ("b", "de", "PAUSED", "2")]
    assert templates[1].components[0]["text"] == "Hallo {{1}}"
    assert [r.url.params.get("after") for r in rec.requests] == [None, "A1"]
    assert all(r.url.params["status"] == "APPROVED" and r.url.params["limit"] == "100" for r in rec.requests)


async def test_create_and_delete_template():
    rec = Recorder({
        ("POST", f"/v23.0/{WABA}/message_templates"): httpx.Response(200, json={"id": "594425479261596", "status": "PENDING", "category": "UTILITY"}),
        ("DELETE", f"/v23.0/{WABA}/message_templates"): httpx.Response(200, json={"success": True}),
    })
    components = [{"type": "BODY", "text": "Order {{1}} shipped", "example": {"body_text": [["A-1"]]}}]
    async with client_for(rec) as graph:
        created = await graph.create_template(WABA, name="order_shipped", language="en_US", category="UTILITY", components=components, token=TOKEN)
        assert (created.id, created.status) == ("594425479261596", "PENDING")
        assert json.loads(rec.last.content) == {"name": "order_shipped", "language": "en_US", "category": "UTILITY", "components": components}
        assert await graph.delete_template(WABA, "order_shipped", token=TOKEN, hsm_id="594425479261596") is True
    assert dict(rec.last.url.params) == {"name": "order_shipped", "hsm_id": "594425479261596"}


async def test_phone_numbers():
    number = {"id": PNID, "display_phone_number": "+1 555-078-3881", "verified_name": "Acme", "status": "CONNECTED",
              "quality_rating": "GREEN", "throughput": {"level": "STANDARD"},
              "whatsapp_business_manager_messaging_limit": "TIER_2K", "new_field": 1}
    rec = Recorder({
        ("GET", f"/v23.0/{WABA}/phone_numbers"): httpx.Response(200, json={"data": [number], "paging": {"cursors": {}}}),
        ("GET", f"/v23.0/{PNID}"): httpx.Response(200, json=number),
    })
    async with client_for(rec) as graph:
        [listed] = await graph.list_phone_numbers(WABA, token=TOKEN)
        info = await graph.phone_number(PNID, token=TOKEN)
    assert isinstance(listed, PhoneNumberInfo) and listed.quality_rating == "GREEN"
    assert (info.throughput_level, info.messaging_limit, info.status) == ("STANDARD", "TIER_2K", "CONNECTED")
    assert info.model_extra == {"new_field": 1}
    fields = rec.last.url.params["fields"].split(",")
    assert {"quality_rating", "throughput", "whatsapp_business_manager_messaging_limit", "status"} <= set(fields)
    assert PhoneNumberInfo(id="1", messaging_limit_tier="TIER_250").messaging_limit == "TIER_250"


async def test_register_number():
    rec = Recorder({("POST", f"/v23.0/{PNID}/register"): httpx.Response(200, json={"success": True})})
    async with client_for(rec) as graph:
        assert await graph.register_number(PNID, "123456", token=TOKEN) is True
        with pytest.raises(ValueError, match="6 digits"):
            await graph.register_number(PNID, "12ab", token=TOKEN)
    assert json.loads(rec.last.content) == {"messaging_product": "whatsapp", "pin": "123456"}
    assert len(rec.requests) == 1


async def test_register_rate_limit_is_throttled():
    rec = Recorder({("POST", f"/v23.0/{PNID}/register"): httpx.Response(400, json=meta_error(133016))})
    async with client_for(rec) as graph:
        with pytest.raises(E.Throttled):
            await graph.register_number(PNID, "123456", token=TOKEN)


async def test_subscribe_and_unsubscribe():
    rec = Recorder({
        ("POST", f"/v23.0/{WABA}/subscribed_apps"): httpx.Response(200, json={"success": True}),
        ("DELETE", f"/v23.0/{WABA}/subscribed_apps"): httpx.Response(200, json={"success": True}),
    })
    async with client_for(rec) as graph:
        assert await graph.subscribe_app(WABA, token=TOKEN) is True
        assert rec.last.content == b""
        assert await graph.subscribe_app(WABA, token=TOKEN, override_callback_uri="https://hooks.example/wa", verify_token="v") is True
        assert json.loads(rec.last.content) == {"override_callback_uri": "https://hooks.example/wa", "verify_token": "v"}
        assert await graph.unsubscribe_app(WABA, token=TOKEN) is True
    assert [r.method for r in rec.requests] == ["POST", "POST", "DELETE"]


async def test_exchange_code_and_debug_token():
    rec = Recorder({
        ("GET", "/v23.0/oauth/access_token"): httpx.Response(200, json={"access_token": "EAAnew", "token_type": "bearer"}),
        ("GET", "/v23.0/debug_token"): httpx.Response(200, json={"data": {
            "app_id": "987654321098765", "type": "SYSTEM_USER", "application": "wapipe", "is_valid": True,
            "expires_at": 0, "data_access_expires_at": 0, "scopes": ["whatsapp_business_management", "whatsapp_business_messaging"],
            "granular_scopes": [{"scope": "whatsapp_business_management", "target_ids": [WABA]},
                                {"scope": "whatsapp_business_messaging", "target_ids": [WABA, "209876543210987"]}],
            "user_id": "1122334455"}}),
    })
    async with client_for(rec) as graph:
        exchanged = await graph.exchange_code("987654321098765", "app-secret-xyz", "code-abc")
        assert exchanged.access_token == "EAAnew" and "EAAnew" not in repr(exchanged)
        assert dict(rec.last.url.params) == {"client_id": "987654321098765", "client_secret": "app-secret-xyz", "code": "code-abc"}
        assert "authorization" not in rec.last.headers
        info = await graph.debug_token("EAAnew", app_token="987654321098765|app-secret-xyz")
    assert rec.last.url.params["input_token"] == "EAAnew"
    assert rec.last.headers["authorization"] == "Bearer 987654321098765|app-secret-xyz"
    assert info.is_valid and info.type == "SYSTEM_USER"
    assert info.waba_ids == [WABA, "209876543210987"]
    assert info.targets("whatsapp_business_management") == [WABA]


async def test_version_and_base_url_are_configurable():
    rec = Recorder({("GET", f"/v24.0/{PNID}"): httpx.Response(200, json={"id": PNID})})
    graph = GraphClient("https://sandbox.local:8443/", "/v24.0", transport=httpx.MockTransport(rec))
    try:
        await graph.phone_number(PNID, token=TOKEN)
    finally:
        await graph.aclose()
    assert str(rec.last.url).startswith(f"https://sandbox.local:8443/v24.0/{PNID}?")


# --- transport failures (mocked) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("exc", "cls"),
    [(httpx.ConnectError("refused"), E.Transient), (httpx.ConnectTimeout("t"), E.Transient),
     (httpx.PoolTimeout("p"), E.Transient), (httpx.ReadTimeout("r"), E.UnknownOutcome),
     (httpx.RemoteProtocolError("Server disconnected"), E.UnknownOutcome), (httpx.ReadError("reset"), E.UnknownOutcome)],
)
async def test_transport_errors_on_send(exc, cls):
    def handler(request):
        raise exc

    async with client_for(handler) as graph:
        with pytest.raises(E.MetaError) as info:
            await graph.send_message(PNID, TextMessage(to="16505551234", body="x"), token=TOKEN)
    assert type(info.value) is cls


async def test_lost_answer_to_a_get_is_transient_but_not_for_the_code_exchange():
    def handler(request):
        raise httpx.ReadTimeout("r")

    async with client_for(handler) as graph:
        with pytest.raises(E.Transient):
            await graph.phone_number(PNID, token=TOKEN)
        with pytest.raises(E.UnknownOutcome):  # single-use code: a retry cannot help
            await graph.exchange_code("1", "s", "c")


# --- real sockets: timeouts, resets, connection reuse ----------------------------------------------
class RawServer:
    """A minimal HTTP/1.1 server on 127.0.0.1 with keep-alive. ``mode``: ok | hang | close | reset."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.connections = 0
        self.requests: list[bytes] = []
        self._tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode("latin-1").split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                if self.mode == "hang":
                    await asyncio.sleep(3600)
                if self.mode == "close":
                    return
                if self.mode == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                body = json.dumps(SEND_OK).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)


MSG = TextMessage(to="16505551234", body="hello")


async def test_pooled_keepalive_connection_is_reused():
    async with RawServer("ok") as server, GraphClient(server.url, "v23.0") as graph:
        for _ in range(20):
            await graph.send_message(PNID, MSG, token=TOKEN)
        results = await asyncio.gather(*(graph.send_message(PNID, MSG, token=TOKEN) for _ in range(5)))
    assert len(server.requests) == 25 and all(r.wamid.startswith("wamid.") for r in results)
    assert server.connections <= 5  # 20 sequential sends on one connection, ≤ 5 for the concurrent burst
    assert server.requests[0].startswith(f"POST /v23.0/{PNID}/messages HTTP/1.1".encode())


async def test_read_timeout_after_send_is_unknown_outcome_with_per_call_timeout():
    async with RawServer("hang") as server, GraphClient(server.url, "v23.0", timeout=30.0) as graph:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(E.UnknownOutcome) as info:
            await graph.send_message(PNID, MSG, token=TOKEN, timeout=0.3)
        assert loop.time() - started < 5  # the per-call timeout, not the client's 30 s
    assert len(server.requests) == 1  # the request did reach the server
    assert info.value.retryable is False and isinstance(info.value.__context__, httpx.ReadTimeout)


@pytest.mark.parametrize("mode", ["close", "reset"])
async def test_connection_dropped_after_write_is_unknown_outcome(mode):
    async with RawServer(mode) as server, GraphClient(server.url, "v23.0") as graph:
        with pytest.raises(E.UnknownOutcome):
            await graph.send_message(PNID, MSG, token=TOKEN)
    assert len(server.requests) == 1


async def test_connection_refused_is_transient():
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with GraphClient(f"http://127.0.0.1:{port}", "v23.0", connect_timeout=1.0) as graph:
        with pytest.raises(E.Transient) as info:
            await graph.send_message(PNID, MSG, token=TOKEN)
    assert info.value.retryable is True and "not sent" in str(info.value)


# --- the latency hook ------------------------------------------------------------------------------
async def test_on_call_hook_sees_every_call():
    timings: list[CallTiming] = []
    rec = Recorder({
        ("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json=SEND_OK),
        ("GET", f"/v23.0/{PNID}"): httpx.Response(400, json=meta_error(100)),
    })
    async with client_for(rec, on_call=timings.append) as graph:
        await graph.send_message(PNID, MSG, token=TOKEN)
        with pytest.raises(E.Permanent):
            await graph.phone_number(PNID, token=TOKEN)
    assert [(t.endpoint, t.status, t.outcome) for t in timings] == [
        ("POST /{phone_number_id}/messages", 200, "ok"), ("GET /{phone_number_id}", 400, "Permanent")]
    assert all(t.seconds >= 0 for t in timings)


# --- secrets never leak ------------------------------------------------------------------------------
async def test_token_never_in_logs_errors_or_tracebacks(caplog):
    caplog.set_level(logging.DEBUG)
    async with RawServer("hang") as server, GraphClient(server.url, "v23.0") as graph:
        with pytest.raises(E.UnknownOutcome) as lost:
            await graph.send_message(PNID, MSG, token=TOKEN, timeout=0.2)
    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(401, json=meta_error(190, "Invalid OAuth access token"))})
    async with client_for(rec) as graph:
        with pytest.raises(E.AuthError) as denied:
            await graph.send_message(PNID, MSG, token=TOKEN)
        exchange = Recorder({("GET", "/v23.0/oauth/access_token"): httpx.Response(200, json={"access_token": "EAAfresh"})})
    async with client_for(exchange) as graph:
        await graph.exchange_code("42", "app-secret-xyz", "one-time-code")
    for err in (lost.value, denied.value):
        text = repr(err) + str(err) + "".join(traceback.format_exception(err)) + json.dumps(err.to_dict())
        assert TOKEN not in text and "Authorization" not in text
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert "HTTP Request" in logged  # httpx did log the requests...
    for secret in (TOKEN, "app-secret-xyz", "one-time-code", "EAAfresh"):
        assert secret not in logged  # ...without any secret


@pytest.mark.parametrize(("status", "cls"), [(400, E.AuthError), (500, E.Transient)])
async def test_exchange_refused_secret_is_auth_error_but_a_5xx_stays_transient(status, cls):
    body = meta_error(1, "Error validating client secret.")
    rec = Recorder({("GET", "/v23.0/oauth/access_token"): httpx.Response(status, json=body)})
    async with client_for(rec) as graph:
        with pytest.raises(E.MetaError) as info:
            await graph.exchange_code("42", "wrong", "code")
    assert type(info.value) is cls and info.value.code == 1 and info.value.fbtrace_id == "Az8or2yhqkZ"


async def test_a_failing_latency_hook_does_not_change_the_result():
    def broken(timing):
        raise RuntimeError("metrics backend down")

    rec = Recorder({("POST", f"/v23.0/{PNID}/messages"): httpx.Response(200, json=SEND_OK)})
    async with client_for(rec, on_call=broken) as graph:
        accepted = await graph.send_message(PNID, MSG, token=TOKEN)
    assert accepted.wamid == SEND_OK["messages"][0]["id"]


async def test_from_settings_with_overrides():
    from wapipe.config import Settings

    settings = Settings(meta_graph_url="http://127.0.0.1:9", meta_graph_version="v24.0", meta_http_timeout=7.0)
    graph = GraphClient.from_settings(settings, max_connections=3, max_keepalive_connections=3)
    try:
        assert (graph.base_url, graph.version, graph.timeout) == ("http://127.0.0.1:9", "v24.0", 7.0)
        transport = graph._http._transport  # aiohttp's pool under httpx (connectors/meta/transport.py)
        assert transport._max_connections == 3
    finally:
        await graph.aclose()


async def test_undecodable_answer_to_a_send_is_unknown_outcome():
    def handler(request):  # a gzip header over a body that is not gzip: the answer cannot be decoded
        return httpx.Response(200, headers={"content-encoding": "gzip", "content-type": "application/json"}, content=b"not gzip")

    async with client_for(handler) as graph:
        with pytest.raises(E.UnknownOutcome) as info:
            await graph.send_message(PNID, MSG, token=TOKEN)
    assert "DecodingError" in str(info.value)


# --- media download: the token only travels to Meta's hosts -------------------------------------
from hypothesis import given, settings as hsettings, strategies as hst  # noqa: E402

from connectors.meta.client import MediaInfo  # noqa: E402

_ALLOWED = (".fbsbx.com", ".facebook.com", ".whatsapp.net", ".fbcdn.net")


@hsettings(max_examples=300, deadline=None)
@given(host=hst.from_regex(r"[a-z0-9.-]{1,40}", fullmatch=True), scheme=hst.sampled_from(["https", "http", "ftp", ""]),
       suffix=hst.sampled_from(["", ".fbsbx.com", ".fbsbx.com.evil.net", "fbsbx.com", ".facebook.com:8443"]))
def test_property_a_download_never_sends_the_token_elsewhere(host, scheme, suffix):
    """Property: for any URL in a media answer, either it is an https URL on one of Meta's media hosts
    (or the Graph host itself) and is fetched with the token, or nothing is sent at all."""
    import asyncio

    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=b"abc")

    url = f"{scheme}://{host}{suffix}/whatsapp_business/attachments/?mid=1" if scheme else f"{host}{suffix}/x"

    async def go():
        async with GraphClient("https://graph.facebook.com", transport=httpx.MockTransport(handler)) as g:
            return await g.download_media(MediaInfo(id="1", url=url, file_size=3), token="TOKEN")

    try:
        assert asyncio.run(go()) == b"abc"
        sent = True
    except ValueError:
        sent = False
    parsed = httpx.URL(url) if scheme in ("https", "http") else None
    meta_host = bool(parsed and parsed.scheme == "https" and parsed.host.endswith(_ALLOWED))
    graph_host = bool(parsed and parsed.scheme == "https" and parsed.host == "graph.facebook.com" and parsed.port is None)
    assert sent == (meta_host or graph_host)
    assert len(seen) == (1 if sent else 0)
    if sent:
        assert seen[0].headers["authorization"] == "Bearer TOKEN" and seen[0].url.host == parsed.host


def test_media_calls_have_meta_s_shape():
    """upload_media is a multipart form (messaging_product, type, file); media_info takes Meta's
    string file_size; the resumable chunk carries file_offset and the OAuth scheme."""
    import asyncio

    import httpx

    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path.endswith("/media"):
            return httpx.Response(200, json={"id": "555"})
        if request.url.path.endswith("/555"):
            return httpx.Response(200, json={"messaging_product": "whatsapp", "url": "https://lookaside.fbsbx.com/x?mid=555",
                                             "mime_type": "image/png", "sha256": "ab" * 32, "file_size": "303833", "id": "555"})
        return httpx.Response(200, json={"h": "2:handle"})

    async def go():
        async with GraphClient("https://graph.facebook.com", transport=httpx.MockTransport(handler)) as g:
            mid = await g.upload_media("123", b"\x89PNG", mime_type="image/png", token="T", filename="a.png")
            info = await g.media_info(mid, token="T", phone_number_id="123")
            done = await g.upload_chunk("upload:abc?sig=xyz", b"12345", offset=0, token="T")
            return mid, info, done

    mid, info, done = asyncio.run(go())
    assert mid == "555" and info.file_size == 303833 and done.h == "2:handle"
    upload, get, chunk = seen
    body = upload.read()
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    for part in (b'name="messaging_product"\r\n\r\nwhatsapp', b'name="type"\r\n\r\nimage/png',
                 b'name="file"; filename="a.png"', b"\x89PNG"):
        assert part in body
    assert get.url.params["phone_number_id"] == "123" and get.headers["authorization"] == "Bearer T"
    assert chunk.url.path == "/v23.0/upload:abc" and chunk.url.params["sig"] == "xyz"
    assert chunk.headers["file_offset"] == "0" and chunk.headers["authorization"] == "OAuth T" and chunk.read() == b"12345"
