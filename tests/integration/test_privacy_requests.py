"""Data-subject requests on the real broker: restriction, correction + export (through the real
CLI), Meta's deletion callback for an unknown user, unique confirmation codes, audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import replace

import pytest

from tests.harness import eventually

from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import producer
from wapipe.messages.privacy import PrivacyStatus
from wapipe.messages.times import at_ms
from wapipe.privacy import KeyRing, load_kek, pepper_from, subject_id
from wapipe.privacy.processor import PrivacyProcessor
from wapipe.privacy.records import Publisher, new_request
from wapipe.privacy.restrictions import RestrictionRegistry
from wapipe.privacy.service import PrivacyService
from wapipe.edge.scan import scan
from wapipe.topics import AUDIT, INBOUND_MESSAGES

pytestmark = pytest.mark.integration




def cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "WAPIPE_STATE_DIR": str(settings.state_dir), "WAPIPE_JARS_DIR": str(settings.jars_dir)}
    env.pop("CLICKHOUSE_URL", None)
    return subprocess.run([sys.executable, "-m", "wapipe", "privacy", *args], env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def processor(settings, topics, unique):
    p = PrivacyProcessor(settings, topics, group=f"privacy-req-{unique}", check_interval_s=0.2).start()
    try:
        yield p
    finally:
        p.close()


def test_restriction_reaches_another_process_and_can_be_lifted(settings, topics, processor, unique):
    svc = PrivacyService(settings, topics).start()
    reg = RestrictionRegistry(settings, topics).start()  # what the send pipeline / normaliser hold
    try:
        tenant = f"t-{unique}"
        other = svc.subject(tenant, "15550109999")
        rec = svc.submit("RESTRICTION", tenant_id=tenant, wa_id="+1 555 010 0001")
        sid = rec.subject_id
        eventually(lambda: reg.is_restricted(sid))
        assert reg.is_restricted(tenant, sid) and not reg.is_restricted(other)
        processor.tick()
        eventually(lambda: (processor.tick() or True)
                   and svc.status(rec.confirmation_code, tenant_id=tenant).status == "COMPLETED")
        svc.submit("UNRESTRICTION", tenant_id=tenant, subject=sid)
        eventually(lambda: not reg.is_restricted(sid))
        # A restriction of the same number in another tenant is another subject.
        assert not reg.is_restricted(svc.subject(f"other-{unique}", "15550100001"))
    finally:
        reg.close()
        svc.close()


@pytest.mark.slow  # several CLI processes
def test_correction_replaces_the_name_in_the_export_via_cli(settings, topics, unique):
    tenant, phone = f"t-{unique}", "1555" + uuid.uuid4().int.__str__()[:8]
    sid = subject_id(pepper_from(settings), tenant, phone)
    serde = AvroSerde.from_settings(settings)
    with KeyRing(settings, topics, load_kek(settings)) as ring:
        ring.wait_ready(30)
        now = int(time.time() * 1000)
        rec = {"event_id": uuid.uuid4().hex, "tenant_id": tenant, "waba_id": "w1", "phone_number_id": "1001",
               "message_id": f"wamid.{uuid.uuid4().hex}", "type": "text", "timestamp": now, "subject_id": sid,
               "pii": ring.seal(tenant, sid, {"from": phone, "profile_name": "Old Wrongname",
                                              "message": {"text": {"body": "hello"}}}), "received_at": now}
        p = producer(topics)
        p.produce(INBOUND_MESSAGES, key=b"1001", value=serde.encode("InboundMessage", rec, topic=INBOUND_MESSAGES))
        assert p.flush(10) == 0

    r = cli(settings, "correct", "--tenant", tenant, "--wa-id", phone, "--field", "profile_name", "--value", "New Rightname")
    assert r.returncode == 0, r.stderr
    assert "New Rightname" not in r.stdout  # the corrected value travels sealed

    r = cli(settings, "export", "--tenant", tenant, "--wa-id", phone)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["subject_id"] == sid
    inbound = doc["kafka"][INBOUND_MESSAGES]
    assert len(inbound) == 1 and inbound[0]["record"]["pii"]["profile_name"] == "New Rightname"
    assert inbound[0]["record"]["pii"]["from"] == phone
    assert "Old Wrongname" not in r.stdout
    assert {q["kind"] for q in doc["requests"]} >= {"CORRECTION", "ACCESS"}

    # The audit trail links events to the requests (target), never to the person (issue 18).
    ids = {q["request_id"] for q in doc["requests"]}
    actions = set()
    for m in scan(topics, AUDIT):
        try:
            ev = serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            continue
        if ev.get("target") in ids:
            actions.add(ev["action"])
            assert ev.get("subject_id") is None, ev
    assert {"privacy.correction.requested", "privacy.access.requested", "privacy.access.completed"} <= actions


def test_meta_deletion_callback_for_unknown_user_completes_with_no_data_held(settings, topics, processor, unique):
    # What the ingress writes for Meta's data-deletion callback (producers/ingress/callbacks.py).
    serde = AvroSerde.from_settings(settings)
    req = new_request("ERASURE", source="meta_deletion_callback", meta_user_id=f"meta-{unique}")
    Publisher(producer(topics), serde).request(req)
    processor.registry.wait_ready(30)
    eventually(lambda: (processor.tick() or True) and processor.registry.get(req.request_id).status == "COMPLETED")
    done = processor.registry.get(req.request_id)
    assert done.details["outcome"] == "no data held"


@pytest.mark.slow  # several CLI processes
def test_cli_erase_prints_a_unique_confirmation_code_and_status_finds_it(settings, topics, processor, unique):
    codes = set()
    for i in range(2):
        r = cli(settings, "erase", "--tenant", f"t-{unique}", "--wa-id", f"1555000{i:04d}")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["kind"] == "ERASURE" and out["status"] == "RECEIVED"
        codes.add(out["confirmation_code"])
    assert len(codes) == 2
    code = codes.pop()
    r = cli(settings, "status", code, "--tenant", f"t-{unique}")
    assert r.returncode == 0 and json.loads(r.stdout)["confirmation_code"] == code
    r = cli(settings, "status", code, "--tenant", f"other-{unique}")  # another tenant's code: as if unknown
    assert r.returncode == 1 and "no request" in r.stderr and code not in r.stdout
    r = cli(settings, "erase", "--tenant", f"t-{unique}")
    assert r.returncode == 1 and "wa_id" in r.stderr


def test_final_requests_leave_the_topic_after_their_retention_a_restriction_in_effect_stays(settings, topics, unique):
    """Issue 18: wa.privacy.requests was compact-only, so every subject id, Meta user id and
    confirmation code stayed for ever. A final request older than privacy_request_retention_ms is
    tombstoned (compaction then removes it); a restriction still in effect stays; young ones stay."""
    from wapipe.topics import PRIVACY_REQUESTS

    day = 24 * 3600 * 1000
    old = int(time.time() * 1000) - 3 * day
    serde = AvroSerde.from_settings(settings)
    pub = Publisher(producer(topics), serde)

    def final(kind, **kw):
        rec = new_request(kind, source="meta" if kw.get("meta_user_id") else "cli", tenant_id=f"t-{unique}", **kw)
        rec = replace(rec, status=PrivacyStatus.COMPLETED, requested_at=at_ms(old), updated_at=at_ms(old))
        pub.request(rec)
        return rec

    expired_erasure = final("ERASURE", meta_user_id=f"meta-{unique}")
    restricted_still = final("RESTRICTION", subject_id=f"r-{unique}")
    lifted = [final("RESTRICTION", subject_id=f"l-{unique}"), final("UNRESTRICTION", subject_id=f"l-{unique}")]
    lifted[1] = replace(lifted[1], requested_at=at_ms(old + 1000))
    pub.request(lifted[1])
    young = new_request("ERASURE", source="cli", tenant_id=f"t-{unique}", subject_id=f"y-{unique}")
    young = replace(young, status=PrivacyStatus.COMPLETED)
    pub.request(young)

    s = settings.model_copy(update={"privacy_request_retention_ms": day})
    processor = PrivacyProcessor(s, topics, group=f"privacy-{unique}").start()
    try:
        processor.tick()
        gone = {expired_erasure.request_id, lifted[0].request_id, lifted[1].request_id}
        for rid in gone:
            assert processor.registry.get(rid) is None, rid
        assert processor.registry.by_code(expired_erasure.confirmation_code) is None
        for rec in (restricted_still, young):
            assert processor.registry.get(rec.request_id) is not None
        assert processor.registry.is_restricted(f"r-{unique}") and not processor.registry.is_restricted(f"l-{unique}")
    finally:
        processor.close()
    last: dict[bytes, bytes | None] = {}
    for m in scan(topics, PRIVACY_REQUESTS):
        last[m.key()] = m.value()
    for rid in gone:
        assert rid.encode() in last and last[rid.encode()] is None, f"{rid}: no tombstone on {PRIVACY_REQUESTS}"
    assert last[restricted_still.request_id.encode()] is not None and last[young.request_id.encode()] is not None
    # a process started later (another processor, the ingress's status page) no longer knows them
    later = PrivacyService(s, topics).start()
    try:
        later.registry.wait_ready(30)
        assert later.status(expired_erasure.confirmation_code, tenant_id=f"t-{unique}") is None
        assert later.status(restricted_still.confirmation_code, tenant_id=f"t-{unique}") is not None
    finally:
        later.close()


def test_an_erased_subject_is_unlinked_from_the_requests_once_nothing_is_left_to_replay(settings, topics, unique):
    """Issue 18 (subject ids after erasure): the ERASURE request kept the erased subject id for the
    request's whole retention, and their earlier requests too. Once nothing of the subject is left
    on Kafka to replay (the longest retention of a topic with subject ids), the erasure record no
    longer names them and their earlier ACCESS / CORRECTION requests are deleted; a restriction
    stays; a recent erasure keeps its subject (the replay guard still needs it)."""
    from wapipe.topics import PRIVACY_REQUESTS

    day = 24 * 3600 * 1000
    now = int(time.time() * 1000)
    serde = AvroSerde.from_settings(settings)
    pub = Publisher(producer(topics), serde)
    s_old, s_new = f"old-{unique}", f"new-{unique}"

    def final(kind, subject, at):
        rec = new_request(kind, source="cli", tenant_id=f"t-{unique}", subject_id=subject)
        rec = replace(rec, status=PrivacyStatus.COMPLETED, requested_at=at_ms(at), updated_at=at_ms(at))
        pub.request(rec)
        return rec

    access, correction = final("ACCESS", s_old, now - 5 * day), final("CORRECTION", s_old, now - 5 * day)
    restriction = final("RESTRICTION", s_old, now - 5 * day)
    erased = final("ERASURE", s_old, now - 9 * day)  # older than the ledger's 7 + 1 days
    access, correction, restriction = (  # made before the erasure
        replace(rec, requested_at=at_ms(now - 10 * day), updated_at=at_ms(now - 10 * day))
        for rec in (access, correction, restriction))
    for rec in (access, correction, restriction):
        pub.request(rec)
    recent = final("ERASURE", s_new, now - day)

    processor = PrivacyProcessor(settings, topics, group=f"privacy-unlink-{unique}").start()
    try:
        processor.tick()
        assert processor.registry.get(erased.request_id).subject_id is None
        assert processor.registry.get(recent.request_id).subject_id == s_new
        assert processor.registry.get(access.request_id) is None
        assert processor.registry.get(correction.request_id) is None
        assert processor.registry.get(restriction.request_id).subject_id == s_old
    finally:
        processor.close()
    last: dict[bytes, bytes | None] = {}
    for m in scan(topics, PRIVACY_REQUESTS):
        last[m.key()] = m.value()
    live = [serde.decode(v, "PrivacyRequest") for v in last.values() if v is not None]
    naming = sorted(r["kind"] for r in live if r.get("subject_id") == s_old)
    assert naming == ["RESTRICTION"], naming
    assert any(r["request_id"] == erased.request_id and r["status"] == "COMPLETED" for r in live)


def test_an_erasure_under_way_without_a_subject_is_rejected_not_completed(settings, topics, processor, unique):
    """An IN_PROGRESS erasure record naming no subject (only writable by hand: the processor
    rejects a RECEIVED one without a subject) is rejected with the same reason; it erased nobody."""
    req = replace(new_request("ERASURE", source="cli", tenant_id=f"t-{unique}"), status=PrivacyStatus.IN_PROGRESS)
    Publisher(producer(topics), AvroSerde.from_settings(settings)).request(req)
    processor.registry.wait_ready(30)
    eventually(lambda: (processor.tick() or True) and processor.registry.get(req.request_id) is not None
               and processor.registry.get(req.request_id).final)
    done = processor.registry.get(req.request_id)
    assert (done.status, done.details.get("reason"), done.steps) == ("REJECTED", "no subject", {})
