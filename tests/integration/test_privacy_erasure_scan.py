"""Issue 18: after an erasure that says COMPLETED, nothing of the person is recoverable anywhere.

Every part real: the Meta sandbox, `wapipe ingress`, `wapipe normalise`, `wapipe worker` (send),
`wapipe sink` (chDB) and `wapipe privacy run`. Two people, A and B, each write to the business (one
message a reply to ours), get a template message and its statuses (sent, delivered, read). Then
`wapipe privacy erase --wait` erases A, the services stop, and the scan reads

* every topic of the broker from the beginning, Faust changelogs included (keys, values, headers),
* every RocksDB store under the state dir (read whole) and every other file there,
* every file of the chDB folder, part files decompressed (masked rows and replaced parts included),

looking for A's number in clear and inside every wamid it can decode (Meta's wamid embeds it), and
in ClickHouse for A's subject id too. A is found nowhere; B's data is intact (B's sealed records
still open, B's rows still there, B's clear wamid recoverable from B's sealed status only).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import pytest

from producers.erp import template
from tests.integration.disk_scan import chdb_files, files_bytes, holds, rocksdb_dirs, rocksdb_items, wamid_payloads
from tests.integration.test_send_pipeline import send_world  # noqa: F401 - the fixture
from wapipe.app.services import ServiceSpec
from tests.harness import make_settings
from wapipe.edge.clients import admin_client
from wapipe.topics import STATUS_EVENTS, SUBJECT_KEYS, WEBHOOK_DEAD, WEBHOOK_RAW, apply_topics, spec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = dict(erasure_deadline_ms=2000, compacted_segment_ms=200, min_cleanable_dirty_ratio=0.01,
            tombstone_retention_ms=100, raw_webhook_retention_ms=1500, raw_webhook_segment_ms=200,
            erasure_old_parts_lifetime_s=1, privacy_check_interval_s=0.3)
SHORT = tuple(spec(t) for t in (SUBJECT_KEYS, WEBHOOK_RAW, WEBHOOK_DEAD))


def _number() -> str:
    return "4917" + "".join(random.choice("0123456789") for _ in range(8))


def _cli(env, *args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wapipe", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _all_topics(bootstrap: str) -> list[str]:
    return sorted(t for t in admin_client(bootstrap).list_topics(timeout=10).topics if not t.startswith("__"))


def test_an_erased_person_is_found_nowhere_and_another_is_untouched(send_world, tmp_path):  # noqa: F811
    from sinks.reader import open_reader
    from wapipe.avro import AvroSerde
    from wapipe.privacy import KeyRing, SubjectErased, load_kek
    from wapipe.edge.scan import scan

    w = send_world
    sb, ctl = w.sandbox, w.sandbox.control
    env = {**w.env, "WAPIPE_META_APPS": json.dumps({sb.app_id: sb.app_secret}),
           "WAPIPE_NORMALISE_APP_ID": f"normalise-{w.tenant_id}", "WAPIPE_NORMALISE_OFFSET_RESET": "latest",
           "WAPIPE_SINK_GROUP": f"sink-{w.tenant_id}", "WAPIPE_SINK_BATCH_MS": "300", "WAPIPE_SINK_DLQ_MAX_RATIO": "1.0",
           **{f"WAPIPE_{k.upper()}": str(v) for k, v in FAST.items()}}
    w.env = env
    state = w.settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    sup = w.supervisor
    sup.start(ServiceSpec("normalise", ("normalise",), env=env, ready_timeout=90, stop_timeout=20))
    ingress = sup.start(ServiceSpec("ingress", ("ingress",), args=("--port", "0", "--host", "127.0.0.1"), env=env,
                                    ready_timeout=60, stop_timeout=20))
    ctl.set_webhook(ingress.ready_value.rstrip("/") + "/webhook", app_id=sb.app_id, app_secret=sb.app_secret)
    sup.start(ServiceSpec("sink", ("sink",), env=env, ready_timeout=120, stop_timeout=30))
    sup.start(ServiceSpec("privacy", ("privacy", "run"), env=env, ready_timeout=90, stop_timeout=20))
    w.start_worker()

    pnid = w.numbers[0]
    people = {"A": _number(), "B": _number()}
    subject = {who: w.subject(n) for who, n in people.items()}
    try:
        for who, number in people.items():
            ctl.inbound(pnid, number, f"hello from {who}", name=f"Person {who}")
            w.send(template(number, "hello_world"), w.routing(f"scan-{who}"))
        final = w.final([f"scan-{who}" for who in people], timeout=60)
        assert {r["outcome"] for r in final.values()} == {"ACCEPTED"}, final
        sent = {m["biz_opaque_callback_data"]: m["wamid"] for m in ctl.messages(pnid)}
        for who, number in people.items():  # a reply to our message: its context carries our wamid
            ctl.inbound(pnid, number, f"thanks, {who}", context_id=sent[f"{w.tenant_id}/scan-{who}"])

        reader = open_reader(w.settings)
        try:
            def rows(s: str) -> tuple:
                return reader.query("SELECT (SELECT count() FROM status_events WHERE subject_id = {s:String}),"
                                    " (SELECT count() FROM inbound_messages WHERE subject_id = {s:String}),"
                                    " (SELECT count() FROM send_results WHERE subject_id = {s:String})", {"s": s})[0]

            deadline = time.monotonic() + 90
            while not all(rows(s) >= (3, 2, 1) for s in subject.values()):
                assert time.monotonic() < deadline, {who: rows(s) for who, s in subject.items()}
                time.sleep(0.5)
        finally:
            reader.close()
        time.sleep(1.0)  # the last duplicate-free status webhooks are in; nothing of A arrives after the request

        apply_topics(admin_client(w.bootstrap), w.settings.model_copy(update=FAST), SHORT)
        r = _cli(env, "privacy", "erase", "--tenant", w.tenant_id, "--wa-id", people["A"], "--wait", "150", timeout=200)
        assert r.returncode == 0, r.stderr[-2000:]
        out = json.loads(r.stdout)
        assert out["status"] == "COMPLETED", out
        assert "rewritten" in out["details"]["clickhouse"], out["details"]

        exports = {}
        for who, number in people.items():
            r = _cli(env, "privacy", "export", "--tenant", w.tenant_id, "--wa-id", number)
            assert r.returncode == 0, r.stderr[-2000:]
            exports[who] = r.stdout.encode()
    finally:
        ctl.set_webhook(None)
        sup.stop_all()  # before the scan: stores closed, files final
        apply_topics(admin_client(w.bootstrap), make_settings(tmp_path / "restore", kafka_bootstrap_servers=w.bootstrap),
                     SHORT)

    a_needles = [people["A"].encode()]
    # --- the subject's own export: nothing of A; B's own data is there, sealed parts opened -----
    assert holds(exports["A"], a_needles) == [], exports["A"][:2000]
    assert people["B"].encode() in exports["B"]

    # --- Kafka: every topic, Faust changelogs included ---------------------------------------------
    found: dict[str, int] = {}
    b_opened = 0
    kek = load_kek(w.settings)
    serde = AvroSerde.from_settings(w.settings)
    with KeyRing(w.settings, w.bootstrap, kek) as ring:
        ring.wait_ready(30)
        for topic in _all_topics(w.bootstrap):
            for m in scan(w.bootstrap, topic, timeout=120):
                blob = (m.key() or b"") + b"\0" + (m.value() or b"") + b"".join(
                    (k.encode() + b"=" + (v or b"")) for k, v in (m.headers() or []))
                if holds(blob, a_needles):
                    found[topic] = found.get(topic, 0) + 1
                if topic == STATUS_EVENTS and m.value():
                    ev = serde.decode(m.value(), "StatusEvent")
                    if ev.get("pii") and ev.get("subject_id") in subject.values():
                        if ev["subject_id"] == subject["A"]:
                            with pytest.raises(SubjectErased):
                                ring.unseal(ev["pii"])
                        else:
                            opened = ring.unseal(ev["pii"])
                            assert opened["recipient_id"] == people["B"]
                            assert any(people["B"].encode() in d for d in wamid_payloads(opened["wamid"].encode()))
                            assert ev["wamid"].startswith("wref.") and m.key() == ev["wamid"].encode()
                            b_opened += 1
    assert not found, f"A's number (in clear or inside a wamid) still on: {found}"
    assert b_opened >= 3, "B's statuses (sent, delivered, read) still open, with B's wamid sealed inside"

    # --- RocksDB stores and every other file under the state dir (chDB below) ------------------------
    dbs = rocksdb_dirs(state)
    assert len(dbs) >= 3, f"the send worker's ledger and tables and the normaliser's table: {dbs}"
    b_key_seen = False
    for db in dbs:
        for k, v in rocksdb_items(db):
            assert not holds(k + b"\0" + v, a_needles), f"A in RocksDB {db}: {k!r}"
            b_key_seen = b_key_seen or b"scan-B" in k + v
    assert b_key_seen, "the scan reads the stores (B's ledger entry is there)"
    chdb = state / "chdb"
    for path, blob in files_bytes(state):
        if chdb in path.parents or (tmp_path / "logs") in path.parents:
            continue
        assert not holds(blob, a_needles), f"A in {path}"

    # --- ClickHouse on disk: A's number, wamids and subject id nowhere; B's rows there ----------------
    a_ch = a_needles + [subject["A"].encode()]
    b_files = set()
    for path, blob in chdb_files(chdb):
        assert not holds(blob, a_ch), f"A in chDB file {path}"
        if subject["B"].encode() in blob:
            b_files.add(path.parent)
    assert len(b_files) >= 3, "B's rows stay (status_events, inbound_messages, send_results ...)"
