"""`wapipe media fetch` end to end on the real broker against the sandbox: inbound media messages
(converted by the real normaliser, sealed with the real key ring) are fetched with their tenant's
token into the tenant's folder, sealed per subject; poison records and unfetchable media are
dead-lettered with their reason without losing the record after them; erasing the subject makes
the stored file unreadable; `wapipe media get` is scoped to the tenant."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from processors.normalise.convert import Normaliser
from wapipe.privacy.wamids import WamidRefs
from tests.integration.kafka_helpers import read_all
from wapipe.avro import AvroSerde
from wapipe.edge.group_start import start_at_end
from wapipe.edge.clients import producer as make_producer
from wapipe.media.sealed import object_id_for
from wapipe.privacy.kek import load_kek
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.subjects import pepper_from, subject_id
from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import publish_tenant
from tests.harness import make_settings
from wapipe.edge.clients import admin_client
from wapipe.topics import INBOUND_MESSAGES, MEDIA_DEAD

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
KEK = base64.b64encode(os.urandom(32)).decode()
PEPPER = base64.b64encode(os.urandom(32)).decode()


def _webhook(fixture: str, waba: str, pnid: str, wa_id: str, kind: str | None = None, media: dict | None = None) -> bytes:
    doc = json.loads((FIXTURES / f"{fixture}.json").read_text())
    doc["entry"][0]["id"] = waba
    value = doc["entry"][0]["changes"][0]["value"]
    value["metadata"]["phone_number_id"] = pnid
    value["contacts"][0]["wa_id"] = wa_id
    msg = value["messages"][0]
    msg["from"] = wa_id
    msg["id"] = "wamid." + uuid.uuid4().hex
    if media is not None:
        msg[kind].update(media)
    return json.dumps(doc).encode()


def _start_at_end(kafka: str, group: str) -> None:
    from confluent_kafka import KafkaException

    for attempt in range(30):  # a fresh broker answers "coordinator load in progress" for a while
        try:
            start_at_end(admin_client(kafka), group, [INBOUND_MESSAGES])
            return
        except KafkaException:
            if attempt == 29:
                raise
            time.sleep(1)


def _run(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wapipe", "media", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_inbound_media_is_fetched_sealed_stored_and_erasable(tmp_path, kafka, topics, meta_sandbox, unique):
    sb = meta_sandbox
    s = make_settings(tmp_path / "state", kafka_bootstrap_servers=kafka, kek=SecretStr(KEK),
                      subject_pepper=SecretStr(PEPPER), meta_graph_url=sb.url, media_group=f"media-{unique}")
    kek = load_kek(s)
    # Two tenants at Meta: ours (the sandbox's WABA) and another business whose token cannot
    # read our WABA's media.
    c = sb.control
    c.add_business("1000000077")
    c.add_waba("2000000077", "1000000077")
    c.add_number("3000000077", "2000000077")
    c.add_token("EAAtenantB", ["2000000077"])
    ta, tb = f"ta{unique}", f"tb{unique}"
    p = make_producer(kafka)
    publish_tenant(p, Tenant(tenant_id=ta, status=TenantStatus.ACTIVE, waba_id=sb.waba_id,
                             numbers=(PhoneNumber(phone_number_id=sb.number_id),)).with_token(kek, sb.token))
    publish_tenant(p, Tenant(tenant_id=tb, status=TenantStatus.ACTIVE, waba_id="2000000077",
                             numbers=(PhoneNumber(phone_number_id="3000000077"),)).with_token(kek, "EAAtenantB"))
    _start_at_end(kafka, s.media_group)  # only this test's records

    photo = b"\xff\xd8\xff\xe0" + os.urandom(40_000)
    pdf = b"%PDF-1.7\n" + os.urandom(20_000)
    m_photo = c.add_media(sb.number_id, "image/jpeg", photo)
    m_pdf = c.add_media(sb.number_id, "application/pdf", pdf)
    b64 = lambda data: base64.b64encode(hashlib.sha256(data).digest()).decode()  # noqa: E731
    user = "4915112340077"
    serde = AvroSerde.from_settings(s)
    with KeyRing(s, kafka, kek) as ring, TenantRegistry(s, kafka) as registry:
        ring.wait_ready(60)
        registry.wait_ready(60)
        norm = Normaliser(registry, ring.seal, lambda scope, wa: subject_id(pepper_from(s), scope, wa),
                          wamid_ref=WamidRefs.from_settings(s))  # as `wapipe normalise` (issue 18)
        now = dt.datetime.now(dt.timezone.utc)

        def events(body: bytes):
            return norm.convert({"ingress_id": "t", "received_at": now, "app_id": "app", "signature_verified": True,
                                 "headers": {}, "body": body})

        [img] = events(_webhook("inbound_image", sb.waba_id, sb.number_id, user, "image",
                                {"id": m_photo["id"], "sha256": b64(photo), "mime_type": "image/jpeg"}))
        [text] = events(_webhook("inbound_text", sb.waba_id, sb.number_id, user))
        # Tenant B's number receives a message naming tenant A's media id: B's token may not read it.
        [foreign] = events(_webhook("inbound_image", "2000000077", "3000000077", user, "image", {"id": m_photo["id"]}))
        # A number no tenant claims: no token to fetch with.
        [orphan] = events(_webhook("inbound_image", "2999999999", "3999999999", user, "image", {"id": m_photo["id"]}))
        [missing] = events(_webhook("inbound_image", sb.waba_id, sb.number_id, user, "image", {"id": "1999999999999"}))
        [doc] = events(_webhook("inbound_document", sb.waba_id, sb.number_id, user, "document",
                                {"id": m_pdf["id"], "sha256": b64(pdf), "mime_type": "application/pdf",
                                 "filename": "invoice-4711.pdf"}))
        assert img.record.tenant_id == ta and foreign.record.tenant_id == tb and orphan.record.tenant_id is None
        positions: dict[str, tuple[int, int]] = {}

        def produce(name: str, key: bytes, value: bytes) -> None:
            p.produce(INBOUND_MESSAGES, key=key, value=value,
                      on_delivery=lambda err, msg: positions.__setitem__(name, (msg.partition(), msg.offset())))

        key = sb.number_id.encode()
        produce("poison", key, b"\x00not avro at all")
        for name, ev in (("image", img), ("text", text), ("foreign", foreign), ("orphan", orphan), ("missing", missing),
                         ("document", doc)):
            produce(name, ev.key.encode(), serde.encode("InboundMessage", ev.record.to_avro(), topic=INBOUND_MESSAGES))
        assert p.flush(30) == 0

        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "WAPIPE_STATE_DIR": str(tmp_path / "state"),
               "WAPIPE_KEK": KEK, "WAPIPE_SUBJECT_PEPPER": PEPPER, "WAPIPE_META_GRAPH_URL": sb.url,
               "WAPIPE_MEDIA_GROUP": s.media_group, "WAPIPE_MEDIA_URL": str(tmp_path / "media")}
        run = _run(env, "fetch", "--once")
        assert run.returncode == 0, run.stderr
        assert "READY media folder" in run.stdout and "stored=2" in run.stdout and "not_media=1" in run.stdout

        # The files: in tenant A's folder under opaque names, sealed (no plaintext, no phone number).
        folder = tmp_path / "media" / ta
        names = sorted(f.name for f in folder.iterdir())
        assert names == sorted([object_id_for(ta, img.record.event_id), object_id_for(ta, doc.record.event_id)])
        for f in folder.iterdir():
            raw = f.read_bytes()
            assert photo[:4096] not in raw and pdf[:4096] not in raw and user.encode() not in raw
            assert b"invoice-4711" not in raw
        assert not (tmp_path / "media" / tb).exists()

        # Dead letters for exactly the bad records, each with its reason.
        dead = {}
        for m in read_all(kafka, MEDIA_DEAD):
            d = serde.decode(m.value(), "DeadLetter")
            dead[(d["partition"], d["offset"])] = d
        mine = {name: dead.get(pos) for name, pos in positions.items()}
        assert mine["image"] is None and mine["document"] is None and mine["text"] is None
        assert mine["poison"]["error_type"] == "SerdeError"
        assert mine["orphan"]["error_type"] == "NoTenant"
        assert mine["foreign"]["tenant_id"] == tb and "refused" in mine["foreign"]["reason"]
        assert mine["missing"]["tenant_id"] == ta and "refused" in mine["missing"]["reason"]

        # Reading back: within its tenant only; the content and name are the sender's.
        out = tmp_path / "out.pdf"
        got = _run(env, "get", "--tenant", ta, "--event-id", doc.record.event_id, "--out", str(out))
        assert got.returncode == 0, got.stderr
        assert out.read_bytes() == pdf and "application/pdf" in got.stdout
        other = _run(env, "get", "--tenant", tb, "--event-id", doc.record.event_id, "--out", str(tmp_path / "x"))
        assert other.returncode == 2 and "no stored media" in other.stderr
        bad = _run(env, "get", "--tenant", "../" + ta, "--event-id", doc.record.event_id, "--out", str(tmp_path / "x"))
        assert bad.returncode == 1 and "bad tenant id" in bad.stderr

        # Retention: nothing is older than the tenant's content days yet.
        swept = _run(env, "sweep")
        assert swept.returncode == 0 and "deleted=0" in swept.stdout

        # Erasure: the subject's keys tombstoned -> the stored files can no longer be opened.
        assert ring.erase(img.record.subject_id) >= 1
        gone = _run(env, "get", "--tenant", ta, "--event-id", img.record.event_id, "--out", str(tmp_path / "y"))
        assert gone.returncode == 3 and "erased" in gone.stderr
        assert not (tmp_path / "y").exists()
        # ... and the next sweep removes the (unreadable) files: both were the erased sender's.
        swept = _run(env, "sweep")
        assert swept.returncode == 0 and "deleted=2" in swept.stdout and "erased=2" in swept.stdout, swept.stdout
        assert list(folder.iterdir()) == []


class _Tenants:
    def __init__(self, tenants):
        self.by_id = {t.tenant_id: t for t in tenants}

    def tenant(self, tenant_id):
        return self.by_id.get(tenant_id)


async def test_fetch_outcomes_one_record_at_a_time(tmp_path, meta_sandbox):
    """The per-record decisions against the sandbox (no broker): webhook SHA-256 mismatch, a
    download that keeps timing out, restricted and erased subjects, a tenant without a token."""
    from connectors.meta.client import GraphClient
    from tests.integration.test_media_store import KeyTable
    from wapipe.media.fetch import Dead, MediaFetcher
    from wapipe.media.store import LocalMediaStore

    sb = meta_sandbox
    s = make_settings(tmp_path / "state", kek=SecretStr(KEK), subject_pepper=SecretStr(PEPPER))
    kek = load_kek(s)
    keys = KeyTable()
    tenants = _Tenants([Tenant(tenant_id="acme", waba_id=sb.waba_id).with_token(kek, sb.token),
                        Tenant(tenant_id="notoken", waba_id=sb.waba_id)])
    store = LocalMediaStore(tmp_path / "media")
    photo = b"\xff\xd8\xff" + os.urandom(1000)
    mid = sb.control.add_media(sb.number_id, "image/jpeg", photo)["id"]

    def record(tenant="acme", subject="subj-1", sha=None, pii=True, event="ev-1"):
        image = {"id": mid, "mime_type": "image/jpeg", **({"sha256": sha} if sha else {})}
        sealed = keys.seal(tenant, subject, {"from": "4915112340001", "message": {"type": "image", "image": image}})
        return {"event_id": event, "tenant_id": tenant, "phone_number_id": sb.number_id, "type": "image",
                "subject_id": subject, "pii": sealed if pii else None}

    async with GraphClient(sb.url, "v23.0", timeout=0.3) as graph:
        f = MediaFetcher(s, graph=graph, keyring=keys, tenants=tenants, kek=kek, store=store, backoff_s=0.01)
        assert await f.process(record(sha=base64.b64encode(hashlib.sha256(photo).digest()).decode())) == "stored"
        with pytest.raises(Dead) as mismatch:
            await f.process(record(sha=base64.b64encode(b"\x00" * 32).decode(), event="ev-2"))
        assert mismatch.value.error_type == "Sha256Mismatch"
        assert await f.process(record(pii=False, event="ev-3")) == "restricted"
        with pytest.raises(Dead) as no_token:
            await f.process(record(tenant="notoken", event="ev-4"))
        assert no_token.value.error_type == "NoToken"
        erased = record(subject="subj-9", event="ev-5")
        keys.erase("subj-9")
        assert await f.process(erased) == "erased"
        sb.control.set_latency(800)  # every Graph answer now outlasts the client's 0.3 s timeout
        with pytest.raises(Dead) as slow:
            await f.process(record(event="ev-6"))
        assert "gave up after 3 attempts" in slow.value.reason
    assert [o.object_id for o in await store.list("acme")] == [object_id_for("acme", "ev-1")]


def test_the_service_says_ready_and_stops_cleanly_on_sigterm(tmp_path, kafka, topics, unique):
    import queue
    import signal
    import threading

    import httpx

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "WAPIPE_STATE_DIR": str(tmp_path / "state"),
           "WAPIPE_KEK": KEK, "WAPIPE_SUBJECT_PEPPER": PEPPER, "WAPIPE_MEDIA_GROUP": f"media-{unique}",
           "WAPIPE_MEDIA_URL": f"file://{tmp_path / 'media'}"}
    # stderr to a file: a chatty child must never block on a full pipe nobody reads
    with open(tmp_path / "stderr.log", "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "wapipe", "media", "fetch"], env=env, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    try:
        try:
            line = lines.get(timeout=150)
        except queue.Empty:
            line = ""
        assert line.startswith("READY media folder"), (line, (tmp_path / "stderr.log").read_text()[-2000:])
        probe = json.loads((tmp_path / "state" / "probes" / "media.json").read_text())
        assert httpx.get(probe["url"] + "/readyz", timeout=5).status_code == 200
        assert f'wapipe_consumer_lag{{group="media-{unique}"' in httpx.get(probe["url"] + "/metrics", timeout=10).text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not (tmp_path / "state" / "probes" / "media.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    bad = _run({**env, "WAPIPE_MEDIA_URL": "ftp://nowhere/x"}, "fetch", "--once")
    assert bad.returncode == 1 and "use a folder path" in bad.stderr


def test_upload_cli_is_scoped_to_the_tenant_s_numbers(tmp_path, kafka, topics, meta_sandbox, unique):
    sb = meta_sandbox
    s = make_settings(tmp_path / "state", kafka_bootstrap_servers=kafka, kek=SecretStr(KEK), subject_pepper=SecretStr(PEPPER))
    kek = load_kek(s)
    ta, tb = f"ua{unique}", f"ub{unique}"
    p = make_producer(kafka)
    publish_tenant(p, Tenant(tenant_id=ta, status=TenantStatus.ACTIVE, waba_id=sb.waba_id,
                             numbers=(PhoneNumber(phone_number_id=sb.number_id),)).with_token(kek, sb.token))
    publish_tenant(p, Tenant(tenant_id=tb, status=TenantStatus.ACTIVE, waba_id=sb.waba_id,
                             numbers=(PhoneNumber(phone_number_id=sb.number_ids[1]),)))  # no token
    assert p.flush(30) == 0
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka, "WAPIPE_STATE_DIR": str(tmp_path / "state"),
           "WAPIPE_KEK": KEK, "WAPIPE_SUBJECT_PEPPER": PEPPER, "WAPIPE_META_GRAPH_URL": sb.url}
    pdf = tmp_path / "invoice.pdf"
    pdf.write_bytes(b"%PDF-1.7\n" + os.urandom(5000))
    ok = _run(env, "upload", "--tenant", ta, "--number", sb.number_id, str(pdf))
    assert ok.returncode == 0, ok.stderr
    media_id = ok.stdout.strip()
    stored = sb.sandbox.media.media[media_id]
    assert stored.content == pdf.read_bytes() and stored.mime_type == "application/pdf"
    other = _run(env, "upload", "--tenant", ta, "--number", sb.number_ids[1], str(pdf))
    assert other.returncode == 1 and "does not belong to tenant" in other.stderr
    no_token = _run(env, "upload", "--tenant", tb, "--number", sb.number_ids[1], str(pdf))
    assert no_token.returncode == 1 and "has no token" in no_token.stderr
    big = tmp_path / "huge.png"
    big.write_bytes(b"\x89PNG" + bytes(5 * 1024 * 1024))
    too_big = _run(env, "upload", "--tenant", ta, "--number", sb.number_id, str(big))
    assert too_big.returncode == 1 and "exceeds Meta's limit" in too_big.stderr
    assert len(sb.sandbox.media.media) == 1  # nothing but the one good upload reached Meta
