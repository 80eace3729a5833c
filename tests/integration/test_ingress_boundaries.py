"""The ingress's HTTP boundary under hostile input (the `wapipe ingress` process, granian, the real
broker): property tests over webhook bodies, signature headers and signed_request strings, and the
body size limit agreeing with what Kafka stores (docs/security.md, "HTTP boundaries")."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import socket
import time
from urllib.parse import quote

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.meta.signature import sign
from producers.ingress import signed_request
from producers.ingress.process import IngressProcess, wait_until
from tests.integration.kafka_helpers import read_all
from tests.strategies import ANY_BODIES, ANY_JSON, HEADER_BYTES, IDS, SIGNATURE_HEADERS, dumps
from wapipe.avro import AvroSerde
from wapipe.config import Settings
from wapipe.topics import WEBHOOK_DEAD, WEBHOOK_RAW, webhook_record_max_bytes

pytestmark = pytest.mark.integration

APPS = {"app-one": "s3cret-one"}
SECRET = APPS["app-one"].encode()
LIMIT = Settings().ingress_max_body_bytes  # the default: Meta's 3 MB plus a margin
serde = AvroSerde()
PROPS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))


def _start(topics: str, log, **env: str) -> IngressProcess:
    return IngressProcess({"KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_META_APPS": json.dumps(APPS),
                           "WAPIPE_PUBLIC_BASE_URL": "https://wa.example.test", **env}, log_path=log).start()


@pytest.fixture(scope="module")
def ingress(topics, tmp_path_factory):
    """The default body limit (WAPIPE_INGRESS_MAX_BODY_BYTES unset), topics as `wapipe topics apply` sets them."""
    proc = _start(topics, tmp_path_factory.mktemp("ingress") / "ingress.log")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def http(ingress):
    with httpx.Client(base_url=ingress.url, timeout=30) as c:
        yield c


def post(http: httpx.Client, body: bytes, signature: bytes | str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json",
               "x-hub-signature-256": signature if signature is not None else sign(SECRET, body)}
    return http.post("/webhook", content=body, headers=headers)


def raw_bodies(bootstrap: str) -> set[bytes]:
    return {serde.decode(m.value(), "RawWebhook")["body"] for m in read_all(bootstrap, WEBHOOK_RAW)}


def dead_bodies(bootstrap: str) -> set[bytes]:
    return {serde.decode(m.value(), "DeadLetter")["value"] for m in read_all(bootstrap, WEBHOOK_DEAD)}


def _is_object(body: bytes) -> bool:
    try:
        return isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        return False


# --- signatures ----------------------------------------------------------------------------------
def test_any_wrong_signature_header_is_401(http):
    """Any header bytes a client can send (non-ASCII included), on any body: 401, never a 500."""

    @PROPS
    @given(body=ANY_BODIES, header=SIGNATURE_HEADERS | HEADER_BYTES)
    @example(body=b"{}", header="sha256=\xe9".encode("latin-1"))  # the fuzzed 500
    @example(body=b'{"entry":[]}', header="sha256=ü".encode() * 9)
    def run(body, header):
        # field-value bytes HTTP allows (a control byte is the server's own 400, before the app)
        header = bytes(c for c in header if c >= 0x20 and c != 0x7f).strip(b" ")
        if header.lower() == sign(SECRET, body).encode():
            return
        r = post(http, body, signature=header)
        assert r.status_code == 401, (r.status_code, r.text)

    run()


# --- signed bodies ---------------------------------------------------------------------------------
def test_any_signed_body_is_acked_and_kept(http, topics):
    """Any signed body (webhook-shaped JSON with the wrong type at any level, any JSON, any bytes):
    200, and it is on wa.webhook.raw when it is a JSON object, else on wa.webhook.dead — never a
    5xx that Meta would retry for 7 days."""
    sent: list[bytes] = []

    @PROPS
    @given(body=ANY_BODIES)
    @example(body=b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":5}]}')  # the fuzzed 500
    @example(body=b'{"entry":[{"changes":[{"value":{"metadata":{"phone_number_id":"' + b"9" * 5000 + b'"}}}]}]}')
    @example(body=b"[" * 100_000)
    def run(body):
        r = post(http, body)
        assert r.status_code == 200, (r.status_code, r.text)
        sent.append(body)

    run()
    raw, dead = raw_bodies(topics), dead_bodies(topics)
    for body in sent:
        assert body in (raw if _is_object(body) else dead), body[:200]


# --- size: what the ingress accepts, Kafka stores (and readers read) ---------------------------
def _webhook_of_size(size: int, pnid: str) -> bytes:
    """A status webhook padded to exactly ``size`` bytes, with random (incompressible) padding: the
    producer compresses, and the topic's limit applies to the compressed batch."""
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "WABA-big", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": pnid, "display_phone_number": "15550001"},
        "statuses": [{"id": f"wamid.{pnid}", "status": "delivered", "timestamp": "1700000000",
                      "recipient_id": "15550002"}]}}]}], "padding": ""}
    body = json.dumps(doc).encode()
    doc["padding"] = base64.b64encode(os.urandom(size)).decode()[:size - len(body)]
    body = json.dumps(doc).encode()
    assert len(body) == size
    return body


def _raw_record(bootstrap: str, key: bytes) -> dict:
    [rec] = [serde.decode(m.value(), "RawWebhook") for m in read_all(bootstrap, WEBHOOK_RAW) if m.key() == key]
    return rec


def test_a_body_at_the_limit_is_stored_and_one_byte_more_is_413(http, topics, unique):
    assert LIMIT >= 3 * 1024 * 1024  # Meta sends up to 3 MB
    two_mb = _webhook_of_size(2 * 1024 * 1024, f"PN2MB{unique}")  # the 503 + Retry-After
    r = post(http, two_mb)
    assert r.status_code == 200, r.text
    assert _raw_record(topics, f"PN2MB{unique}".encode())["body"] == two_mb

    at_limit = _webhook_of_size(LIMIT, f"PNMAX{unique}")
    r = post(http, at_limit)
    assert r.status_code == 200, r.text
    assert _raw_record(topics, f"PNMAX{unique}".encode())["body"] == at_limit  # byte for byte

    over = _webhook_of_size(LIMIT + 1, f"PNOVER{unique}")
    r = post(http, over)
    assert r.status_code == 413
    assert not [m for m in read_all(topics, WEBHOOK_RAW) if m.key() == f"PNOVER{unique}".encode()]


def test_a_signed_non_json_body_at_the_limit_is_dead_lettered(http, topics, unique):
    body = (unique.encode() + b"<" + base64.b64encode(os.urandom(LIMIT)))[:LIMIT]
    r = post(http, body)
    assert r.status_code == 200, r.text
    assert body in dead_bodies(topics)


def test_the_normaliser_consumer_reads_a_record_of_the_largest_size(http, topics, settings, unique):
    """The normaliser's Faust consumer (aiokafka, its max_partition_fetch_bytes) reads the largest
    raw record back whole: aiokafka skips a record over its fetch size (RecordTooLargeError)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from processors.normalise.app import build_app

    app = build_app(settings, topics, normaliser=None)
    fetch = app.conf.consumer_max_fetch_size
    assert fetch >= webhook_record_max_bytes(settings)
    pnid = f"PNREAD{unique}"
    body = _webhook_of_size(LIMIT, pnid)
    assert post(http, body).status_code == 200
    [where] = [(m.partition(), m.offset()) for m in read_all(topics, WEBHOOK_RAW) if m.key() == pnid.encode()]

    async def read() -> bytes:
        c = AIOKafkaConsumer(bootstrap_servers=topics, enable_auto_commit=False, max_partition_fetch_bytes=fetch)
        await c.start()
        try:
            tp = TopicPartition(WEBHOOK_RAW, where[0])
            c.assign([tp])
            c.seek(tp, where[1])
            msg = await asyncio.wait_for(c.getone(), 30)
            return msg.value
        finally:
            await c.stop()

    assert serde.decode(asyncio.run(read()), "RawWebhook")["body"] == body


def test_an_ingress_set_above_its_topics_lowers_its_own_limit(topics, tmp_path, unique):
    """An ingress configured above what the topics take (topics not re-applied after raising the
    setting): it reads the topics' max.message.bytes at startup, so a 5 MB body is refused from its
    Content-Length alone (no byte of it sent), and says so in its log. A small body is still a 200."""
    log = tmp_path / "ingress.log"
    proc = _start(topics, log, WAPIPE_INGRESS_MAX_BODY_BYTES=str(8 * 1024 * 1024))
    try:
        host, port = proc.url.removeprefix("http://").split(":")

        def refused_unread() -> bool:
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.settimeout(1.0)
                sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             b"X-Hub-Signature-256: sha256=00\r\nContent-Length: %d\r\n\r\n" % (5 * 1024 * 1024))
                try:
                    return sock.recv(4096).startswith(b"HTTP/1.1 413")
                except TimeoutError:  # still waiting for the body: the limit is the 8 MiB setting
                    return False

        assert wait_until(refused_unread, 20), log.read_text()[-2000:]
        assert "wapipe topics apply" in log.read_text()
        with httpx.Client(base_url=proc.url, timeout=30) as c:
            assert post(c, _webhook_of_size(1024, f"PNSMALL{unique}")).status_code == 200
    finally:
        proc.stop()


@pytest.mark.parametrize("producer_max", ["over_the_topic", "under_the_body"])
async def test_a_record_kafka_refuses_as_too_large_is_413_not_503(topics, unique, producer_max):
    """The webhook endpoint (ASGI, a real publisher and broker) when Kafka itself refuses the record
    as too large — the broker (topic max.message.bytes) or the producer (message.max.bytes): 413,
    because a 503 would have Meta resend it for 7 days; nothing is stored."""
    from producers.ingress.metrics import IngressMetrics
    from producers.ingress.webhook import WebhookEndpoint
    from wapipe.publisher import KafkaPublisher

    s = Settings(kafka_bootstrap_servers=topics)
    size = 5 * 1024 * 1024 if producer_max == "over_the_topic" else 200 * 1024
    publisher = KafkaPublisher(topics, message_timeout_ms=10_000, deadline_ms=15_000,
                               message_max_bytes=16 * 1024 * 1024 if producer_max == "over_the_topic" else 100 * 1024)
    publisher.start(asyncio.get_running_loop())
    endpoint = WebhookEndpoint(secrets={"app-one": SECRET}, verify_token=None, publisher=publisher, serde=serde,
                               metrics=IngressMetrics(), max_body_bytes=8 * 1024 * 1024)
    assert producer_max == "under_the_body" or size > webhook_record_max_bytes(s)  # the topic cannot take it
    pnid = f"PNREFUSED{unique}"
    body = _webhook_of_size(size, pnid)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=endpoint), base_url="http://ingress") as c:
            r = await c.post("/webhook", content=body, headers={"x-hub-signature-256": sign(SECRET, body)})
            assert r.status_code == 413, r.text
            assert "max.message.bytes" in r.text
            small = _webhook_of_size(2048, pnid + "ok")
            r = await c.post("/webhook", content=small, headers={"x-hub-signature-256": sign(SECRET, small)})
            assert r.status_code == 200, r.text
    finally:
        await asyncio.to_thread(publisher.close, 10.0)
    keys = {m.key() for m in read_all(topics, WEBHOOK_RAW)}
    assert (pnid + "ok").encode() in keys and pnid.encode() not in keys


# --- Meta's signed_request callbacks -----------------------------------------------------------
@pytest.mark.parametrize("path", ["/meta/data-deletion", "/meta/deauthorize"])
def test_any_signed_request_is_answered_4xx_or_recorded(http, path):
    """Any form value (unsigned strings, and payloads signed with our secret whatever they hold):
    200 with a confirmation code, or 400/401 with the reason — never a 5xx."""
    now = int(time.time())
    payloads = st.fixed_dictionaries(
        {"algorithm": st.sampled_from(["HMAC-SHA256"]) | ANY_JSON},
        optional={"issued_at": st.just(now) | ANY_JSON, "expires": ANY_JSON, "user_id": IDS}) | ANY_JSON

    def _signed(payload: object) -> str:
        enc = signed_request.b64url_encode(dumps(payload))
        return f"{signed_request.b64url_encode(hmac.new(SECRET, enc.encode(), hashlib.sha256).digest())}.{enc}"

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(value=st.text(max_size=200) | payloads.map(_signed))
    @example(value="é.é")
    @example(value=_signed({"algorithm": "HMAC-SHA256", "user_id": {"nested": 1}, "issued_at": now}))
    @example(value=_signed({"algorithm": "HMAC-SHA256", "user_id": "1", "issued_at": "9" * 5000}))
    def run(value):
        r = http.post(path, data={"signed_request": value})
        assert r.status_code in (200, 400, 401), (r.status_code, r.text)
        doc = r.json()
        assert ("confirmation_code" in doc) == (r.status_code == 200)
        if r.status_code != 200:
            assert doc["error"].startswith("invalid signed_request")

    run()


def test_an_oversized_callback_form_is_413(http):
    r = http.post("/meta/data-deletion", content=b"signed_request=" + b"a" * (128 * 1024),
                  headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "too large" in r.json()["error"]


def test_any_deletion_status_code_is_answered_at_once(http):
    """Any path segment that cannot be a code we issue: 404 (JSON or HTML asked), without the view's
    1 s wait (a code-like unknown one is covered by test_ingress.py)."""

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(code=st.text(min_size=1, max_size=300).filter(
        # ("/" makes another path: Starlette redirects "x/" to "x", then this rule applies)
        lambda c: "/" not in c and c not in (".", "..") and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", c)),
        html=st.booleans())
    @example(code="..%2F..%2Fetc%2Fpasswd", html=True)  # sent as %252F: arrives as "..%2F..%2F..."
    @example(code="<script>", html=True)
    def run(code, html):
        started = time.monotonic()
        r = http.get(f"/meta/deletion-status/{quote(code, safe='')}", headers={"accept": "text/html" if html else "application/json"})
        assert r.status_code == 404, (code, r.status_code, r.text[:200])
        assert "<script>" not in r.text
        assert time.monotonic() - started < 0.9

    run()


def test_any_subscription_handshake_without_the_token_is_403(http):
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(params=st.dictionaries(st.sampled_from(["hub.mode", "hub.verify_token", "hub.challenge", "x"]),
                                  st.text(max_size=60), max_size=4))
    def run(params):
        r = http.get("/webhook", params=params)
        assert r.status_code == 403, (params, r.status_code)  # no verify token configured here: never verified

    run()
