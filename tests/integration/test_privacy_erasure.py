"""Erasure end to end, and the proof: after erasing subject A nothing of A can be read anywhere.

Real broker, real ClickHouse (chDB): records of subjects A and B on every topic that carries
personal data, rows of both in every ClickHouse table with a ``subject_id``; then an ERASURE
request for A driven by the privacy processor and the sink's ErasureWorker to COMPLETED.
The topics involved get short deadlines for the test (compaction lag, segment.ms, raw retention)
and are restored to the declared configs afterwards.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid

import pytest

from sinks.erasure import ErasureWorker, subject_tables
from wapipe.avro import AvroSerde, SerdeError
from wapipe.edge.clients import producer
from wapipe.privacy import KeyRing, SubjectErased, load_kek, pepper_from, subject_id
from wapipe.privacy.records import Publisher, new_request
from wapipe.privacy.processor import PrivacyProcessor
from wapipe.edge.scan import scan
from tests.harness import make_settings
from wapipe.edge.clients import admin_client
from wapipe.topics import (
    AUDIT,
    INBOUND_MESSAGES,
    PRIVACY_REQUESTS,
    SEND_DEAD,
    SEND_REQUESTED,
    STATUS_EVENTS,
    SUBJECT_KEYS,
    TOPICS,
    WEBHOOK_DEAD,
    WEBHOOK_RAW,
    apply_topics,
    spec,
)

pytestmark = pytest.mark.integration

FAST = dict(erasure_deadline_ms=2000, erasure_old_parts_lifetime_s=1, compacted_segment_ms=200, min_cleanable_dirty_ratio=0.01,
            tombstone_retention_ms=100, raw_webhook_retention_ms=1500, raw_webhook_segment_ms=200,
            privacy_check_interval_s=0.3)
SHORT_DEADLINE_TOPICS = tuple(spec(t) for t in (SUBJECT_KEYS, WEBHOOK_RAW, WEBHOOK_DEAD))


@pytest.fixture
def fast(settings, topics, tmp_path):
    """Settings and topic configs with an erasure deadline of seconds; restored afterwards."""
    s = settings.model_copy(update=FAST)
    admin = admin_client(topics)
    apply_topics(admin, s, SHORT_DEADLINE_TOPICS)
    try:
        yield s
    finally:
        apply_topics(admin, make_settings(tmp_path / "restore", kafka_bootstrap_servers=topics), SHORT_DEADLINE_TOPICS)


def sealed_fields(obj) -> list[dict]:
    """Every Sealed dict inside a decoded record."""
    if isinstance(obj, dict):
        if set(obj) == {"key_id", "nonce", "ciphertext"}:
            return [obj]
        return [x for v in obj.values() for x in sealed_fields(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in sealed_fields(v)]
    return []


class World:
    """Realistic records of one subject on every topic that can carry personal data."""

    def __init__(self, s, bootstrap, ring: KeyRing, serde: AvroSerde, tenant: str) -> None:
        self.s, self.bootstrap, self.ring, self.serde, self.tenant = s, bootstrap, ring, serde, tenant
        self.p = producer(bootstrap)
        self.pepper = pepper_from(s)

    def person(self, name: str) -> dict:
        phone = "1555" + "".join(secrets.choice("0123456789") for _ in range(8))
        return {"name": name, "phone": phone, "subject": subject_id(self.pepper, self.tenant, phone)}

    def produce(self, who: dict) -> None:
        now = int(time.time() * 1000)
        t, subj, phone = self.tenant, who["subject"], who["phone"]
        wamid = f"wamid.{uuid.uuid4().hex}"
        cmd = {
            "command_id": uuid.uuid4().hex, "tenant_id": t, "idempotency_key": uuid.uuid4().hex, "phone_number_id": "1001",
            "subject_id": subj, "lane": "TRANSACTIONAL", "campaign_id": None, "kind": "TEXT", "template": None,
            "pii": self.ring.seal(t, subj, {"to": phone, "message": {"type": "text", "text": {"body": f"Hi {who['name']}"}}}),
            "requested_at": now,
        }
        cmd_bytes = self.serde.encode("SendCommand", cmd)
        status = {
            "event_id": uuid.uuid4().hex, "tenant_id": t, "waba_id": "w1", "phone_number_id": "1001", "wamid": wamid,
            "status": "delivered", "timestamp": now, "subject_id": subj,
            "pii": self.ring.seal(t, subj, {"recipient_id": phone}), "received_at": now,
        }
        inbound = {
            "event_id": uuid.uuid4().hex, "tenant_id": t, "waba_id": "w1", "phone_number_id": "1001",
            "message_id": f"wamid.{uuid.uuid4().hex}", "type": "text", "timestamp": now, "subject_id": subj,
            "pii": self.ring.seal(t, subj, {"from": phone, "profile_name": who["name"],
                                            "message": {"text": {"body": f"this is {who['name']}"}}}),
            "received_at": now,
        }
        body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "w1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001001", "phone_number_id": "1001"},
            "contacts": [{"profile": {"name": who["name"]}, "wa_id": phone}],
            "messages": [{"from": phone, "id": inbound["message_id"], "timestamp": str(now // 1000), "type": "text",
                          "text": {"body": f"this is {who['name']}"}}]}}]}]}).encode()
        raw = {"ingress_id": uuid.uuid4().hex, "received_at": now, "app_id": "app1", "signature_verified": True,
               "headers": {}, "body": body}

        def dead(source: str, value: bytes) -> dict:
            return {"source_topic": source, "partition": 0, "offset": 0, "key": None, "value": value,
                    "reason": "test", "error_type": "Test", "tenant_id": t, "subject_id": subj, "headers": {},
                    "failed_at": now}

        audit = {"event_id": uuid.uuid4().hex, "occurred_at": now, "actor": f"tenant:{t}", "tenant_id": t,
                 "subject_id": subj, "action": "send.requested", "target": cmd["command_id"], "outcome": "ok", "details": {}}
        for topic, rec_name, rec, key in (
            (SEND_REQUESTED, "SendCommand", cmd, t), (STATUS_EVENTS, "StatusEvent", status, wamid),
            (INBOUND_MESSAGES, "InboundMessage", inbound, "1001"), (WEBHOOK_RAW, "RawWebhook", raw, "1001"),
            (SEND_DEAD, "DeadLetter", dead(SEND_REQUESTED, cmd_bytes), t),
            (WEBHOOK_DEAD, "DeadLetter", dead(WEBHOOK_RAW, body), "ingress"), (AUDIT, "AuditEvent", audit, t),
        ):
            self.p.produce(topic, key=key.encode(), value=self.serde.encode(rec_name, rec, topic=topic))
        assert self.p.flush(30) == 0


def _plain(typ: str) -> str:
    """A column's value type: ``SimpleAggregateFunction(f, T)`` -> ``T``."""
    return typ.split(", ", 1)[1][:-1] if typ.startswith("SimpleAggregateFunction(") else typ


def ch_insert(client, who: dict) -> None:
    """One row of the subject in every ClickHouse table with a subject_id column."""
    for table in subject_tables(client):
        cols = client.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}"
                            " AND (default_kind = '' OR name = 'subject_id')", parameters={"t": table}).result_rows
        names, values = [], []
        for name, typ in cols:
            if name in ("subject_id", "event_id"):  # event_id: rows of A and B are not one ReplacingMergeTree key
                names.append(name), values.append("{s:String}")
            elif name == "retention_days":
                names.append(name), values.append("3650")
            elif _plain(typ).startswith(("DateTime", "Nullable(DateTime")):
                names.append(name), values.append("now64(3)")
        client.command(f"INSERT INTO `{table}` ({', '.join(names)}) VALUES ({', '.join(values)})",
                       parameters={"s": who["subject"]})


def test_erasure_completes_and_nothing_of_the_subject_is_readable_anywhere(fast, topics, clickhouse, unique):
    s, serde = fast, AvroSerde.from_settings(fast)
    kek = load_kek(s)
    tenant = f"t-{unique}"
    with KeyRing(s, topics, kek) as ring:
        ring.wait_ready(30)
        world = World(s, topics, ring, serde, tenant)
        a, b = world.person("Ana Erasable"), world.person("Bruno Keeper")
        world.produce(a)
        world.produce(b)
    for who in (a, b):
        ch_insert(clickhouse, who)
    assert all(clickhouse.query(f"SELECT count() FROM `{t}` WHERE subject_id = {{s:String}}",
                                parameters={"s": a["subject"]}).result_rows[0][0] >= 1 for t in subject_tables(clickhouse))

    req = new_request("ERASURE", source="cli", tenant_id=tenant, subject_id=a["subject"])
    pub = Publisher(producer(topics), serde)
    processor = PrivacyProcessor(s, topics, kek=kek, group=f"privacy-{unique}").start()
    worker = ErasureWorker(s, topics, group=f"erasure-{unique}")
    try:
        pub.request(req)
        t0 = time.monotonic()
        while True:
            processor.tick()
            worker.poll_once(clickhouse, timeout=0.2)
            rec = processor.registry.get(req.request_id)
            if rec and rec.status == "COMPLETED":
                break
            assert time.monotonic() - t0 < 90, f"erasure not completed in 90 s: {rec and rec.status} {rec and rec.steps}"
        elapsed = time.monotonic() - t0
    finally:
        worker.close()
        processor.close()
    assert rec.steps == {"kafka_keys": "done", "kafka_compaction": "done", "raw_webhooks": "done", "clickhouse": "done"}
    print(f"erasure completed in {elapsed:.1f} s")

    # --- the proof, Kafka: every topic, every partition, from the beginning ----------------------
    a_phone, b_phone = a["phone"].encode(), b["phone"].encode()
    with KeyRing(s, topics, kek) as fresh:  # a process started after the erasure
        fresh.wait_ready(30)
        opened_b = 0
        for t in TOPICS:
            for m in scan(topics, t.name):
                blob = (m.key() or b"") + (m.value() or b"")
                assert a_phone not in blob and b"Ana Erasable" not in blob, f"A in clear on {t.name}"
                if t.name == SUBJECT_KEYS:
                    assert not ((m.key() or b"").startswith(a["subject"].encode()) and m.value()), "A's key still held"
                if not m.value():
                    continue
                try:
                    rec = serde.decode(m.value(), t.value)
                except SerdeError:
                    continue  # another test's deliberately unreadable record
                inner = []
                if t.value == "DeadLetter" and rec.get("value"):
                    try:
                        inner = sealed_fields(serde.decode(rec["value"], spec(rec["source_topic"]).value))
                    except (SerdeError, KeyError):
                        pass
                for sealed in sealed_fields(rec) + inner:
                    if sealed["key_id"].startswith(a["subject"] + "/"):
                        with pytest.raises(SubjectErased):
                            fresh.unseal(sealed)
                    elif sealed["key_id"].startswith(b["subject"] + "/"):
                        assert b["phone"] in json.dumps(fresh.unseal(sealed)) or fresh.unseal(sealed)
                        opened_b += 1
        assert opened_b >= 4, "B's sealed records (command, status, inbound, dead letter) all still open"

    # --- the proof, ClickHouse: every table -------------------------------------------------------
    tables = [r[0] for r in clickhouse.query(
        "SELECT name FROM system.tables WHERE database = currentDatabase() AND engine LIKE '%MergeTree%'").result_rows]
    for table in tables:
        dump = clickhouse.raw_query(f"SELECT * FROM `{table}` FORMAT TSV")
        assert a["subject"].encode() not in dump and a_phone not in dump, f"A still in {table}"
    for table in subject_tables(clickhouse):
        n = clickhouse.query(f"SELECT count() FROM `{table}` WHERE subject_id = {{s:String}}",
                             parameters={"s": b["subject"]}).result_rows[0][0]
        assert n >= 1, f"B's row in {table} must stay"

    # --- accountable: each step is an audit event ---------------------------------------------------
    actions = set()
    for m in scan(topics, AUDIT):
        try:
            ev = serde.decode(m.value(), "AuditEvent")
        except SerdeError:
            continue
        if ev.get("target") == req.request_id:
            actions.add(ev["action"])
    assert {"privacy.erasure.started", "privacy.erasure.kafka_keys_tombstoned", "privacy.erasure.kafka_compacted",
            "privacy.erasure.raw_webhooks_expired", "privacy.erasure.clickhouse_deleted",
            "privacy.erasure.completed"} <= actions
    final = [serde.decode(m.value(), "PrivacyRequest") for m in scan(topics, PRIVACY_REQUESTS)
             if m.key() == req.request_id.encode() and m.value()]
    assert final[-1]["status"] == "COMPLETED"
