"""Media and interactive messages through the GraphClient against the real sandbox over HTTP:
upload → send by id; GET /{media_id} → download with the token (size and SHA-256 checked);
expiry and cross-WABA refusals; resumable uploads resumed after an interruption; every
interactive/carousel fixture sent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.meta import errors as E
from connectors.meta.client import MEDIA_LIMITS, GraphClient, MediaInfo, MediaTooLarge
from connectors.meta.messages import DocumentMessage, ImageMessage

pytestmark = pytest.mark.integration

USER = "4915112345678"
OUT = Path(__file__).resolve().parents[1] / "fixtures" / "outbound"
PNG = b"\x89PNG\r\n\x1a\n" + os.urandom(2048)


@pytest.fixture
async def graph(meta_sandbox):
    client = GraphClient(meta_sandbox.url, "v23.0", timeout=5.0)
    try:
        yield client
    finally:
        await client.aclose()


def other_tenant(meta_sandbox) -> str:
    """A second business with its own WABA, number and token (another tenant at Meta)."""
    c = meta_sandbox.control
    c.add_business("1000000009")
    c.add_waba("2000000009", "1000000009")
    c.add_number("3000000009", "2000000009")
    c.add_token("EAAotherTOKEN", ["2000000009"])
    return "EAAotherTOKEN"


async def test_upload_then_send_by_id_then_fetch_and_download(meta_sandbox, graph):
    token, number = meta_sandbox.token, meta_sandbox.number_id
    media_id = await graph.upload_media(number, PNG, mime_type="image/png", token=token, filename="label.png")
    meta_sandbox.control.inbound(number, USER, "hi")  # opens the service window
    accepted = await graph.send_message(number, ImageMessage(to=USER, id=media_id, caption="your label"), token=token)
    assert accepted.wamid.startswith("wamid.")
    info = await graph.media_info(media_id, token=token)
    assert (info.id, info.mime_type, info.file_size, info.sha256) == (media_id, "image/png", len(PNG), hashlib.sha256(PNG).hexdigest())
    assert await graph.download_media(info, token=token) == PNG
    # Scoped to its number when asked; deleted media is gone.
    with pytest.raises(E.MetaError) as wrong_number:
        await graph.media_info(media_id, token=token, phone_number_id=meta_sandbox.number_ids[1])
    assert wrong_number.value.code == 100
    assert await graph.delete_media(media_id, token=token) is True
    with pytest.raises(E.MetaError):
        await graph.media_info(media_id, token=token)


async def test_download_needs_the_token_of_the_media_s_waba(meta_sandbox, graph):
    mid = meta_sandbox.control.add_media(meta_sandbox.number_id, "application/pdf", b"%PDF-1.7 invoice")["id"]
    info = await graph.media_info(mid, token=meta_sandbox.token)
    other = other_tenant(meta_sandbox)
    with pytest.raises(E.MetaError) as not_theirs:
        await graph.media_info(mid, token=other)
    assert not_theirs.value.code == 100
    with pytest.raises(E.MetaError):
        await graph.download_media(info, token=other)
    async with httpx.AsyncClient() as raw:  # without any token
        assert (await raw.get(info.url)).status_code == 401


async def test_download_url_expires_and_a_tampered_url_is_refused(meta_sandbox, graph):
    meta_sandbox.control.configure(media_url_ttl_s=0.001)
    mid = meta_sandbox.control.add_media(meta_sandbox.number_id, "image/jpeg", b"\xff\xd8\xff" + b"j" * 100)["id"]
    info = await graph.media_info(mid, token=meta_sandbox.token)
    await asyncio.sleep(1.1)  # the URL's expiry has second precision
    with pytest.raises(E.MetaError) as expired:
        await graph.download_media(info, token=meta_sandbox.token)
    assert expired.value.http_status == 404
    meta_sandbox.control.configure(media_url_ttl_s=300)
    fresh = await graph.media_info(mid, token=meta_sandbox.token)
    other_id = mid[:-1] + ("0" if mid[-1] != "0" else "1")
    forged = fresh.model_copy(update={"url": fresh.url.replace(f"mid={mid}", f"mid={other_id}")})
    with pytest.raises(E.MetaError):
        await graph.download_media(forged, token=meta_sandbox.token)
    assert len(await graph.download_media(fresh, token=meta_sandbox.token)) == 103


async def test_a_download_that_does_not_match_its_sha256_is_refused(meta_sandbox, graph):
    mid = meta_sandbox.control.add_media(meta_sandbox.number_id, "image/jpeg", b"\xff\xd8\xff" + b"k" * 50)["id"]
    info = await graph.media_info(mid, token=meta_sandbox.token)
    with pytest.raises(E.Transient):
        await graph.download_media(info.model_copy(update={"sha256": "0" * 64}), token=meta_sandbox.token)
    with pytest.raises(E.Transient):
        await graph.download_media(info.model_copy(update={"file_size": 10}), token=meta_sandbox.token)
    with pytest.raises(MediaTooLarge):
        await graph.download_media(info, token=meta_sandbox.token, max_bytes=10)


async def test_the_token_never_goes_to_a_foreign_host(graph):
    info = MediaInfo(id="1", url="https://attacker.example.net/steal?mid=1", mime_type="image/png", sha256=None, file_size=3)
    with pytest.raises(ValueError, match="not Meta's"):
        await graph.download_media(info, token="secret")
    info = MediaInfo(id="1", url="http://lookaside.fbsbx.com/x", file_size=3)  # Meta's host, but not https
    with pytest.raises(ValueError):
        await graph.download_media(info, token="secret")


async def test_upload_limits_and_types(meta_sandbox, graph):
    token, number = meta_sandbox.token, meta_sandbox.number_id
    with pytest.raises(MediaTooLarge):  # refused before anything is sent
        await graph.upload_media(number, b"x" * (MEDIA_LIMITS["image"] + 1), mime_type="image/png", token=token)
    requests_before = meta_sandbox.sandbox.media.media.copy()
    with pytest.raises(E.MetaError) as bad_type:
        await graph.upload_media(number, b"MZ\x90\x00", mime_type="application/x-msdownload", token=token,
                                 media_type="document")
    assert bad_type.value.code == 131053
    assert meta_sandbox.sandbox.media.media == requests_before
    # The sandbox enforces Meta's limits itself too (a client that does not check).
    async with httpx.AsyncClient(base_url=meta_sandbox.url) as raw:
        r = await raw.post(f"/v23.0/{number}/media", headers={"Authorization": f"Bearer {token}"},
                           data={"messaging_product": "whatsapp", "type": "image/png"},
                           files={"file": ("a.png", b"x" * (MEDIA_LIMITS["image"] + 1), "image/png")})
        assert r.status_code == 400 and r.json()["error"]["code"] == 131053
        r = await raw.post(f"/v23.0/{number}/media", headers={"Authorization": f"Bearer {token}"},
                           data={"type": "image/png"}, files={"file": ("a.png", b"png", "image/png")})
        assert r.status_code == 400 and "messaging_product" in r.json()["error"]["message"]
        r = await raw.post(f"/v23.0/{number}/media", headers={"Authorization": f"Bearer {token}"},
                           json={"messaging_product": "whatsapp"})
        assert r.status_code == 400


async def test_a_large_document_upload_and_send(meta_sandbox, graph):
    doc = os.urandom(6 * 1024 * 1024)  # over the image limit, within the document one
    mid = await graph.upload_media(meta_sandbox.number_id, doc, mime_type="application/pdf", token=meta_sandbox.token,
                                   filename="statement.pdf")
    meta_sandbox.control.inbound(meta_sandbox.number_id, USER, "hi")
    await graph.send_message(meta_sandbox.number_id, DocumentMessage(to=USER, id=mid, filename="statement.pdf"),
                             token=meta_sandbox.token)
    info = await graph.media_info(mid, token=meta_sandbox.token)
    assert await graph.download_media(info, token=meta_sandbox.token) == doc


async def test_resumable_upload_in_chunks_and_resumed_after_an_interruption(meta_sandbox, graph):
    token, app = meta_sandbox.token, meta_sandbox.app_id
    data = os.urandom(300_000)
    handle = await graph.upload_file(app, data, file_name="header.png", file_type="image/png", token=token,
                                     chunk_size=64 * 1024)
    assert handle and meta_sandbox.sandbox.media.handles[handle] == data
    # Interrupted: a session with its first two chunks only, then resumed where Meta says.
    session = await graph.start_upload(app, file_name="h.mp4", file_length=len(data), file_type="video/mp4", token=token)
    await graph.upload_chunk(session.id, data[:100_000], offset=0, token=token)
    again = await graph.upload_chunk(session.id, data[:100_000], offset=0, token=token)  # a repeated chunk is harmless
    assert again.file_offset == 100_000 and again.h is None
    assert await graph.upload_offset(session.id, token=token) == 100_000
    resumed = await graph.upload_file(app, data, file_name="h.mp4", file_type="video/mp4", token=token,
                                      session_id=session.id, chunk_size=128 * 1024)
    assert meta_sandbox.sandbox.media.handles[resumed] == data
    with pytest.raises(E.MetaError):  # a chunk at the wrong offset
        s2 = await graph.start_upload(app, file_name="x.pdf", file_length=10, file_type="application/pdf", token=token)
        await graph.upload_chunk(s2.id, b"12345", offset=3, token=token)
    with pytest.raises(E.MetaError):  # another app's token cannot use the session
        await graph.upload_offset(session.id, token=other_tenant(meta_sandbox))
    with pytest.raises(E.MetaError):
        await graph.start_upload(app, file_name="x.exe", file_length=10, file_type="application/x-msdownload", token=token)


@pytest.mark.parametrize("name", sorted(p.stem for p in OUT.glob("*.json")))
async def test_every_interactive_and_carousel_fixture_is_accepted(meta_sandbox, graph, name):
    c = meta_sandbox.control
    c.add_template(meta_sandbox.waba_id, "spring_offers", body_params=1, category="MARKETING")
    body = json.loads((OUT / f"{name}.json").read_text())
    body["to"] = USER
    c.inbound(meta_sandbox.number_id, USER, "hi")
    accepted = await graph.send_message(meta_sandbox.number_id, body, token=meta_sandbox.token)
    [recorded] = [m for m in c.messages(meta_sandbox.number_id) if m["wamid"] == accepted.wamid]
    assert recorded["type"] == body["type"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(min_size=1, max_size=4096), kind=st.sampled_from(["image/png", "application/pdf", "audio/ogg"]))
def test_property_whatever_is_uploaded_downloads_identically(meta_sandbox, content, kind):
    async def go():
        async with GraphClient(meta_sandbox.url, "v23.0", timeout=5.0) as g:
            mid = await g.upload_media(meta_sandbox.number_id, content, mime_type=kind, token=meta_sandbox.token)
            info = await g.media_info(mid, token=meta_sandbox.token)
            return await g.download_media(info, token=meta_sandbox.token)
    assert asyncio.run(go()) == content


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300),
       ctype=st.sampled_from(["multipart/form-data; boundary=xyz", "multipart/form-data", "application/json",
                              "application/octet-stream", "text/plain", ""]),
       path=st.sampled_from(["/v23.0/{number}/media", "/v23.0/{app}/uploads?file_length=x&file_type=image/png",
                             "/v23.0/upload:nosuchsession", "/v23.0/{number}/messages"]),
       offset=st.one_of(st.none(), st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=5)))
def test_property_garbage_to_media_endpoints_is_a_clear_4xx(meta_sandbox, body, ctype, path, offset):
    """Poison input to the media endpoints: always a Meta-shaped 4xx error, never a 5xx or a hang."""
    url = path.format(number=meta_sandbox.number_id, app=meta_sandbox.app_id)
    headers = {"Authorization": f"Bearer {meta_sandbox.token}"}
    if ctype:
        headers["Content-Type"] = ctype
    if offset is not None:
        headers["file_offset"] = offset or "?"
    with httpx.Client(base_url=meta_sandbox.url, timeout=5.0) as raw:
        r = raw.post(url, content=body, headers=headers)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert isinstance(r.json()["error"]["code"], int)


async def test_flow_answer_and_user_media_arrive_as_signed_webhooks_the_models_parse(meta_sandbox, graph):
    """A flow message out; its nfm_reply and a user's photo back as signed webhooks to a real
    receiver; the webhook models parse both; the photo downloads with the token, matching the
    webhook's (base64) SHA-256."""
    from connectors.meta import webhooks as W
    from connectors.meta.messages import FlowMessage
    from tests.integration.test_sandbox_webhooks import Receiver

    c = meta_sandbox.control
    receiver = Receiver(meta_sandbox.app_secret).start()
    try:
        c.set_webhook(receiver.url)
        c.inbound(meta_sandbox.number_id, USER, "hi")
        sent = await graph.send_message(meta_sandbox.number_id, FlowMessage(
            to=USER, body="Rate your delivery", flow_cta="Rate", flow_id="1186439012755531",
            flow_token="order-77-survey", screen="RATE"), token=meta_sandbox.token)
        answer = {"interactive": {"type": "nfm_reply", "nfm_reply": {
            "name": "flow", "body": "Sent", "response_json": json.dumps({"flow_token": "order-77-survey", "rating": "5"})}}}
        c.inbound(meta_sandbox.number_id, USER, type="interactive", text=None, message=answer, context_id=sent.wamid)
        photo = b"\xff\xd8\xff\xe0" + os.urandom(3000)
        c.inbound_media(meta_sandbox.number_id, USER, "image", "image/jpeg", photo, caption="the dent")
        c.wait_webhooks_idle()
        items = [item for post in receiver.posts for item in W.iter_messages(W.parse_webhook(json.dumps(post)))]
    finally:
        receiver.stop()
    [flow] = [i.message for i in items if isinstance(i.message, W.InteractiveMessage)]
    assert flow.interactive.nfm_reply.flow_token == "order-77-survey" and flow.context.id == sent.wamid
    assert flow.interactive.nfm_reply.response == {"flow_token": "order-77-survey", "rating": "5"}
    [image] = [i.message for i in items if isinstance(i.message, W.MediaMessage)]
    assert image.media.caption == "the dent" and image.media.mime_type == "image/jpeg"
    assert base64.b64decode(image.media.sha256) == hashlib.sha256(photo).digest()
    info = await graph.media_info(image.media.id, token=meta_sandbox.token, phone_number_id=meta_sandbox.number_id)
    assert await graph.download_media(info, token=meta_sandbox.token) == photo


def test_uploads_are_bounded_before_the_sandbox_holds_them(meta_sandbox):
    """A declared body over Meta's largest file, and a resumable session longer than it, are
    refused with Meta's media error before any byte is kept."""
    import httpx

    from connectors.meta.sandbox.media import MAX_UPLOAD_BYTES

    import json
    import socket
    from urllib.parse import urlsplit

    auth = {"Authorization": f"Bearer {meta_sandbox.token}"}
    # a client declaring 110 MB: answered from the headers, the body is never read
    url = urlsplit(meta_sandbox.url)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall((f"POST /v23.0/{meta_sandbox.number_id}/media HTTP/1.1\r\nHost: sandbox\r\n"
                      f"Authorization: Bearer {meta_sandbox.token}\r\n"
                      "Content-Type: multipart/form-data; boundary=x\r\n"
                      f"Content-Length: {MAX_UPLOAD_BYTES + 10 * 1024 * 1024}\r\n\r\n--x").encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 400") and json.loads(body)["error"]["code"] == 131053
    with httpx.Client(base_url=meta_sandbox.url, timeout=10) as http:
        app_id = meta_sandbox.app_id
        r = http.post(f"/v23.0/{app_id}/uploads", headers=auth,
                      params={"file_name": "a.pdf", "file_length": str(MAX_UPLOAD_BYTES + 1),
                              "file_type": "application/pdf"})
        assert r.status_code == 400 and r.json()["error"]["code"] == 131053
