"""The webhook ingress over real HTTP (the `wapipe ingress` process, uvicorn) against the real broker."""

from __future__ import annotations

import json
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from connectors.meta.signature import sign
from producers.ingress import signed_request
from producers.ingress.process import IngressProcess, wait_until
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from wapipe.topics import AUDIT, PRIVACY_REQUESTS, WEBHOOK_DEAD, WEBHOOK_RAW

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "webhooks"
APPS = {"app-one": "s3cret-one", "app-two": "s3cret-two"}
VERIFY_TOKEN = "verify-me"
MAX_BODY = 64 * 1024
serde = AvroSerde()


@pytest.fixture(scope="module")
def ingress(topics, tmp_path_factory):
    log = tmp_path_factory.mktemp("ingress") / "ingress.log"
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": topics,
        "WAPIPE_META_APPS": json.dumps(APPS),
        "WAPIPE_VERIFY_TOKEN": VERIFY_TOKEN,
        "WAPIPE_INGRESS_MAX_BODY_BYTES": str(MAX_BODY),
        "WAPIPE_PUBLIC_BASE_URL": "https://wa.example.test",
        "WAPIPE_LOG_LEVEL": "INFO",
    }
    proc = IngressProcess(env, log_path=log).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def http(ingress):
    with httpx.Client(base_url=ingress.url, timeout=10) as c:
        yield c


def status_webhook(phone_number_id: str, wamids: list[str], waba: str = "WABA-1") -> bytes:
    doc = json.loads((FIXTURES / "status_delivered.json").read_text())
    value = doc["entry"][0]["changes"][0]["value"]
    doc["entry"][0]["id"] = waba
    value["metadata"]["phone_number_id"] = phone_number_id
    template = value["statuses"][0]
    value["statuses"] = [{**template, "id": w} for w in wamids]
    return json.dumps(doc).encode()


def post(http: httpx.Client, body: bytes, secret: str | None = APPS["app-one"], **headers) -> httpx.Response:
    h = {"content-type": "application/json", **headers}
    if secret is not None:
        h["x-hub-signature-256"] = sign(secret.encode(), body)
    return http.post("/webhook", content=body, headers=h)


def raw_records_with(bootstrap: str, needle: bytes, expect: int | None = None) -> list[tuple[bytes | None, dict]]:
    out = []
    for m in read_all(bootstrap, WEBHOOK_RAW):
        rec = serde.decode(m.value(), "RawWebhook")
        if needle in rec["body"]:
            out.append((m.key(), rec))
    return out


# --- handshake -----------------------------------------------------------------------------
def test_handshake_answers_the_challenge_with_the_right_token(http):
    r = http.get("/webhook", params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN,
                                     "hub.challenge": "1158201444"})
    assert r.status_code == 200
    assert r.text == "1158201444"
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1"},
    {"hub.mode": "subscribe", "hub.challenge": "1"},
])
def test_handshake_refuses_a_bad_token_or_mode(http, params):
    r = http.get("/webhook", params=params)
    assert r.status_code == 403
    assert "1" not in r.text


# --- signatures ----------------------------------------------------------------------------
def test_signed_webhook_is_written_raw_keyed_by_phone_number_id(http, topics, unique):
    pnid = f"PN{unique}"
    body = status_webhook(pnid, [f"wamid.{unique}.1", f"wamid.{unique}.2", f"wamid.{unique}.3"])
    before = int(time.time() * 1000)
    r = post(http, body, user_agent="facebookexternalua")
    assert r.status_code == 200, r.text
    [(key, rec)] = raw_records_with(topics, unique.encode())
    assert key == pnid.encode()
    assert rec["body"] == body  # byte for byte
    assert rec["app_id"] == "app-one"
    assert rec["signature_verified"] is True
    assert rec["received_at"].timestamp() * 1000 >= before - 5
    assert rec["headers"]["x-hub-signature-256"] == sign(APPS["app-one"].encode(), body)
    assert rec["headers"]["x-wapipe-key-kind"] == "phone_number_id"


def test_each_configured_app_secret_is_accepted_and_named(http, topics, unique):
    bodies = {app: status_webhook(f"PN{unique}{app}", [f"wamid.{unique}.{app}"]) for app in APPS}
    for app, body in bodies.items():
        assert post(http, body, secret=APPS[app]).status_code == 200
    recs = raw_records_with(topics, unique.encode())
    assert sorted(rec["app_id"] for _, rec in recs) == sorted(APPS)
    for _, rec in recs:
        assert rec["body"] == bodies[rec["app_id"]]


def test_non_message_fields_are_keyed_by_waba_id(http, topics, unique):
    doc = json.loads((FIXTURES / "template_approved.json").read_text())
    doc["entry"][0]["id"] = f"WABA{unique}"
    body = json.dumps(doc).encode()
    assert post(http, body).status_code == 200
    [(key, rec)] = raw_records_with(topics, f"WABA{unique}".encode())
    assert key == f"WABA{unique}".encode()
    assert rec["headers"]["x-wapipe-key-kind"] == "waba_id"


@pytest.mark.parametrize("how", ["wrong_secret", "tampered_body", "missing", "not_sha256"])
def test_bad_or_missing_signature_is_401_and_nothing_is_published(http, topics, unique, how):
    body = status_webhook(f"PN{unique}", [f"wamid.{unique}"])
    headers = {"content-type": "application/json"}
    if how == "wrong_secret":
        headers["x-hub-signature-256"] = sign(b"not-our-secret", body)
    elif how == "tampered_body":
        headers["x-hub-signature-256"] = sign(APPS["app-one"].encode(), body)
        body = body.replace(b"delivered", b"read")
    elif how == "not_sha256":
        headers["x-hub-signature-256"] = "sha1=" + sign(APPS["app-one"].encode(), body)[7:]
    r = http.post("/webhook", content=body, headers=headers)
    assert r.status_code == 401
    # A control webhook sent after it is on the topic, so the reader saw everything before it.
    assert post(http, status_webhook(f"PN{unique}ctl", [f"wamid.{unique}ctl"])).status_code == 200
    recs = raw_records_with(topics, unique.encode())
    assert [rec["body"] for _, rec in recs] == [status_webhook(f"PN{unique}ctl", [f"wamid.{unique}ctl"])]


def _metric(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_count_outcomes_and_publish_latency(http, unique):
    published = 'wapipe_ingress_requests_total{endpoint="webhook",outcome="published"}'
    rejected = 'wapipe_ingress_signature_rejects_total{endpoint="webhook",reason="missing"}'
    latency = 'wapipe_ingress_publish_seconds_count{topic="raw"}'
    before = http.get("/metrics").text
    assert post(http, status_webhook(f"PN{unique}", [f"wamid.{unique}"])).status_code == 200
    assert post(http, b"{}", secret=None).status_code == 401
    after = http.get("/metrics").text
    assert _metric(after, published) == _metric(before, published) + 1
    assert _metric(after, rejected) == _metric(before, rejected) + 1
    assert _metric(after, latency) == _metric(before, latency) + 1


# --- size limit ----------------------------------------------------------------------------
def test_declared_oversized_body_is_413_without_reading_it(ingress):
    host, port = ingress.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"X-Hub-Signature-256: sha256=00\r\nContent-Length: %d\r\n\r\n" % (10 * MAX_BODY))
        head = s.recv(4096)  # answered although no byte of the body was sent
    assert head.startswith(b"HTTP/1.1 413")


def test_streamed_oversized_body_is_413_before_it_ends(ingress, topics, unique):
    """Chunked, no Content-Length: refused as soon as the count passes the limit, before the
    body is complete (the terminating chunk is never sent)."""
    host, port = ingress.url.removeprefix("http://").split(":")
    chunk = b"x" * 8192
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"X-Hub-Signature-256: sha256=00\r\n\r\n")
        for _ in range(MAX_BODY // len(chunk) + 1):
            s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 413")


def test_body_at_the_limit_is_accepted(http, topics, unique):
    body = status_webhook(f"PN{unique}", [f"wamid.{unique}"])
    doc = json.loads(body)
    doc["padding"] = "p" * (MAX_BODY - len(body) - 20)
    body = json.dumps(doc).encode()
    assert len(body) <= MAX_BODY
    assert post(http, body).status_code == 200


# --- malformed -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncated", "array"])
def test_signed_but_malformed_is_acked_and_dead_lettered_with_the_reason(http, topics, unique, kind):
    if kind == "truncated":
        body, reason = b'{"object":"whatsapp_business_account","entry":[{"id":"%s"' % unique.encode(), "malformed JSON"
    else:
        body, reason = b'["%s"]' % unique.encode(), "not an object"
    r = post(http, body, secret=APPS["app-two"])
    assert r.status_code == 200
    dead = [serde.decode(m.value(), "DeadLetter") for m in read_all(topics, WEBHOOK_DEAD)]
    [d] = [d for d in dead if d["value"] and unique.encode() in d["value"]]
    assert d["value"] == body
    assert d["source_topic"] == WEBHOOK_RAW
    assert d["error_type"] == "MalformedWebhook"
    assert reason in d["reason"]
    assert d["headers"]["app_id"] == "app-two"
    assert raw_records_with(topics, unique.encode()) == []


# --- data-deletion and deauthorize callbacks -----------------------------------------------
def _signed(app: str = "app-one", **payload) -> str:
    base = {"algorithm": "HMAC-SHA256", "issued_at": int(time.time()), "user_id": "10158000000001"}
    base.update(payload)
    return signed_request.encode(APPS[app].encode(), base)


def _privacy_requests(bootstrap: str, code: str) -> list[dict]:
    recs = [serde.decode(m.value(), "PrivacyRequest") for m in read_all(bootstrap, PRIVACY_REQUESTS) if m.value()]
    return [r for r in recs if r["confirmation_code"] == code]


def test_data_deletion_callback_records_an_erasure_and_serves_its_status(http, topics, unique):
    user = f"99{int(unique, 16) % 10**12}"
    r = http.post("/meta/data-deletion", data={"signed_request": _signed("app-two", user_id=user)})
    assert r.status_code == 200, r.text
    doc = r.json()
    code = doc["confirmation_code"]
    assert doc["url"] == f"https://wa.example.test/meta/deletion-status/{code}"

    [req] = _privacy_requests(topics, code)
    assert (req["kind"], req["source"], req["status"], req["meta_user_id"]) == \
        ("ERASURE", "meta_deletion_callback", "RECEIVED", user)
    assert req["details"]["app_id"] == "app-two"
    audits = [serde.decode(m.value(), "AuditEvent") for m in read_all(topics, AUDIT)]
    [audit] = [a for a in audits if a["target"] == req["request_id"]]
    assert audit["action"] == "privacy.erasure.requested" and audit["actor"] == "meta"
    assert user not in json.dumps(audit, default=str)  # the audit trail names the request, not the person

    status = http.get(f"/meta/deletion-status/{code}")
    assert status.status_code == 200 and status.json()["status"] == "RECEIVED"

    # The privacy processors write progress to the same compacted topic; the page follows it.
    progressed = {**req, "status": "COMPLETED", "updated_at": int(time.time() * 1000),
                  "requested_at": int(req["requested_at"].timestamp() * 1000),
                  "steps": {"kafka_keys": "done", "clickhouse": "done"}}
    p = producer(topics)
    p.produce(PRIVACY_REQUESTS, serde.encode("PrivacyRequest", progressed), req["request_id"].encode())
    assert p.flush(10) == 0
    assert wait_until(lambda: http.get(f"/meta/deletion-status/{code}").json()["status"] == "COMPLETED", 15)
    assert http.get(f"/meta/deletion-status/{code}").json()["steps"] == {"kafka_keys": "done", "clickhouse": "done"}
    page = http.get(f"/meta/deletion-status/{code}", headers={"accept": "text/html"})
    assert "COMPLETED" in page.text and page.headers["content-type"].startswith("text/html")


def test_deletion_codes_are_unique(http):
    codes = {http.post("/meta/data-deletion", data={"signed_request": _signed()}).json()["confirmation_code"]
             for _ in range(5)}
    assert len(codes) == 5


@pytest.mark.parametrize("case", ["forged", "wrong_algorithm", "expired", "issued_long_ago", "garbage", "missing"])
def test_data_deletion_refuses_invalid_signed_requests_and_records_nothing(http, topics, unique, case):
    user = f"77{int(unique, 16) % 10**12}"
    now = int(time.time())
    sr = {
        "forged": signed_request.encode(b"attacker-secret", {"algorithm": "HMAC-SHA256", "issued_at": now, "user_id": user}),
        "wrong_algorithm": _signed(algorithm="HMAC-SHA1", user_id=user),
        "expired": _signed(expires=now - 60, user_id=user),
        "issued_long_ago": _signed(issued_at=now - 3 * 24 * 3600, user_id=user),
        "garbage": "not-a-signed-request",
        "missing": None,
    }[case]
    r = http.post("/meta/data-deletion", data={"signed_request": sr} if sr else {"other": "x"})
    assert r.status_code == (401 if case == "forged" else 400), r.text
    assert "confirmation_code" not in r.json()
    recs = [serde.decode(m.value(), "PrivacyRequest") for m in read_all(topics, PRIVACY_REQUESTS) if m.value()]
    assert not [x for x in recs if x["meta_user_id"] == user]


def test_deauthorize_callback_records_a_disconnect(http, topics, unique):
    user = f"55{int(unique, 16) % 10**12}"
    r = http.post("/meta/deauthorize", data={"signed_request": _signed(user_id=user)})
    assert r.status_code == 200
    [req] = _privacy_requests(topics, r.json()["confirmation_code"])
    assert (req["kind"], req["source"], req["meta_user_id"]) == ("DISCONNECT", "meta_deauthorize", user)
    assert http.post("/meta/deauthorize", data={"signed_request": signed_request.encode(
        b"forged", {"algorithm": "HMAC-SHA256", "user_id": user})}).status_code == 401


def test_unknown_confirmation_code_is_404(http):
    assert http.get("/meta/deletion-status/NOSUCHCODE").status_code == 404


def test_a_tenants_request_code_is_not_served_by_the_public_page(http, topics, unique):
    """Only requests made by Meta's callbacks are public by code; a tenant's is answered like an
    unknown code (the tenant reads it on the privacy API, with its key)."""
    from wapipe.privacy.records import Publisher, new_request

    req = new_request("ERASURE", source="api", tenant_id=f"t-{unique}", subject_id=f"s{unique}")
    Publisher(producer(topics), serde).request(req)
    meta = http.post("/meta/data-deletion", data={"signed_request": _signed()}).json()["confirmation_code"]
    assert wait_until(lambda: http.get(f"/meta/deletion-status/{meta}").status_code == 200, 15)
    assert _privacy_requests(topics, req.confirmation_code)  # on the topic the page follows
    got, none = (http.get(f"/meta/deletion-status/{c}") for c in (req.confirmation_code, "NOSUCHCODE"))
    assert (got.status_code, got.json()) == (none.status_code, none.json()) == (404, none.json())


# --- health --------------------------------------------------------------------------------
def test_health_and_readiness(http):
    assert http.get("/healthz").json() == {"status": "live"}
    r = http.get("/readyz")
    assert r.status_code == 200 and r.json()["kafka"] == "ok"


@pytest.mark.parametrize("server, poll_mode", [("granian", "loop"), ("uvicorn", "thread")])
async def test_sigterm_mid_load_drains_every_acked_webhook_to_the_topic(topics, tmp_path, unique, server, poll_mode):
    """SIGTERM while requests are in flight: each one that got its 200 is on the topic (in-flight
    requests finish and the producer is flushed), and the process exits cleanly."""
    import asyncio
    import signal

    env = {"KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_META_APPS": json.dumps(APPS),
           "WAPIPE_INGRESS_POLL_MODE": poll_mode}
    ing = IngressProcess(env, log_path=tmp_path / "ingress.log", server=server).start()
    results: dict[str, int | str] = {}
    try:
        async with httpx.AsyncClient(base_url=ing.url, timeout=10,
                                     limits=httpx.Limits(max_connections=32)) as c:
            async def one(n: int) -> None:
                body = status_webhook(f"PN{unique}", [f"wamid.{unique}.{n}"])
                try:
                    r = await c.post("/webhook", content=body,
                                     headers={"x-hub-signature-256": sign(APPS["app-one"].encode(), body)})
                    results[f"wamid.{unique}.{n}"] = r.status_code
                except httpx.HTTPError as exc:
                    results[f"wamid.{unique}.{n}"] = type(exc).__name__

            tasks = [asyncio.create_task(one(n)) for n in range(400)]
            while sum(1 for v in results.values() if v == 200) < 50:
                await asyncio.sleep(0.005)
            ing.proc.send_signal(signal.SIGTERM)
            await asyncio.gather(*tasks)
    finally:
        code = ing.stop()
    assert code in (0, -15), (tmp_path / "ingress.log").read_text()[-2000:]
    acked = {w for w, v in results.items() if v == 200}
    assert len(acked) >= 50
    on_topic = Counter(s["id"] for _, rec in raw_records_with(topics, unique.encode())
                       for s in json.loads(rec["body"])["entry"][0]["changes"][0]["value"]["statuses"])
    assert [w for w in acked if on_topic[w] != 1] == []


def test_status_page_works_across_workers(topics, tmp_path):
    """With several workers, the status URL may be served by a worker that did not record the
    request: it finds it on wa.privacy.requests."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_META_APPS": json.dumps(APPS)}
    with IngressProcess(env, workers=2, log_path=tmp_path / "ingress.log") as ing:
        for _ in range(5):
            with httpx.Client(base_url=ing.url, timeout=10) as c:
                r = c.post("/meta/data-deletion", data={"signed_request": _signed()})
                assert r.status_code == 200
                code = r.json()["confirmation_code"]
            for _ in range(4):  # new connections, right away: the kernel spreads them over the workers
                with httpx.Client(base_url=ing.url, timeout=10) as c:
                    r = c.get(f"/meta/deletion-status/{code}")
                    assert r.status_code == 200 and r.json()["status"] == "RECEIVED", r.text
