"""Data-subject requests on the real broker: restriction, correction + export (through the real
CLI), Meta's deletion callback for an unknown user, unique confirmation codes, audit trail."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from wapipe.avro import AvroSerde, SerdeError
from wapipe.kafka import producer
from wapipe.privacy import KeyRing, load_kek, pepper_from, subject_id
from wapipe.privacy.processor import PrivacyProcessor
from wapipe.privacy.records import Publisher, new_request
from wapipe.privacy.restrictions import RestrictionRegistry
from wapipe.privacy.service import PrivacyService
from wapipe.privacy.topicscan import scan
from wapipe.topics import AUDIT, INBOUND_MESSAGES

pytestmark = pytest.mark.integration


def eventually(check, timeout=20.0, every=0.2):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(every)


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
        sid = rec["subject_id"]
        eventually(lambda: reg.is_restricted(sid))
        assert reg.is_restricted(tenant, sid) and not reg.is_restricted(other)
        processor.tick()
        eventually(lambda: (processor.tick() or True)
                   and svc.status(rec["confirmation_code"], tenant_id=tenant)["status"] == "COMPLETED")
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

    actions = set()
    for m in scan(topics, AUDIT):
        try:
            ev = serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            continue
        if ev.get("subject_id") == sid:
            actions.add(ev["action"])
    assert {"privacy.correction.requested", "privacy.access.requested", "privacy.access.completed"} <= actions


def test_meta_deletion_callback_for_unknown_user_completes_with_no_data_held(settings, topics, processor, unique):
    # What the ingress writes for Meta's data-deletion callback (producers/ingress/callbacks.py).
    serde = AvroSerde.from_settings(settings)
    req = new_request("ERASURE", source="meta_deletion_callback", meta_user_id=f"meta-{unique}")
    Publisher(producer(topics), serde).request(req)
    processor.registry.wait_ready(30)
    eventually(lambda: (processor.tick() or True) and processor.registry.get(req["request_id"])["status"] == "COMPLETED")
    done = processor.registry.get(req["request_id"])
    assert done["details"]["outcome"] == "no data held"


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
