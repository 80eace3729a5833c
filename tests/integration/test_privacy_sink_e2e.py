"""Erasure across real processes: `wapipe sink` (which runs sinks/erasure.ErasureWorker between
batches, owning chDB) and `wapipe privacy run`; `wapipe privacy erase --wait` returns COMPLETED and
the sink's tables no longer hold subject A, while B's rows stay."""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from sinks.reader import open_reader
from wapipe.avro import AvroSerde
from wapipe.kafka import producer
from wapipe.privacy.kek import load_kek
from wapipe.privacy.keyring import KeyRing
from tests.harness import make_settings
from wapipe.topics import (INBOUND_MESSAGES, SEND_REQUESTED, STATUS_EVENTS, SUBJECT_KEYS, WEBHOOK_DEAD, WEBHOOK_RAW,
                           admin_client, apply_topics, spec)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = dict(erasure_deadline_ms=2000, erasure_old_parts_lifetime_s=1, compacted_segment_ms=200, min_cleanable_dirty_ratio=0.01,
            tombstone_retention_ms=100, raw_webhook_retention_ms=1500, raw_webhook_segment_ms=200)
SHORT = tuple(spec(t) for t in (SUBJECT_KEYS, WEBHOOK_RAW, WEBHOOK_DEAD))


def start(args, env, log):
    proc = subprocess.Popen([sys.executable, "-m", "wapipe", *args], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if lines.get(timeout=0.5).startswith("READY"):
                return proc
        except queue.Empty:
            continue
    proc.kill()
    raise AssertionError(f"{args} not READY")


def stop(proc) -> int:
    proc.terminate()
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(5)


def test_erasure_through_the_running_sink(topics, tmp_path, unique):
    admin = admin_client(topics)
    state = tmp_path / "state"
    settings = make_settings(state, kafka_bootstrap_servers=topics)
    apply_topics(admin, settings.model_copy(update=FAST), SHORT)
    serde = AvroSerde()
    now = dt.datetime.now(dt.timezone.utc)
    tenant = f"t-{unique}"
    subjects = {"A": f"a{unique}", "B": f"b{unique}"}
    p = producer(topics)
    # Real data keys of the tenant: `privacy erase --subject` accepts only a subject the tenant owns.
    with KeyRing(settings, topics, load_kek(settings)) as ring:
        sealed_for = {s: ring.seal(tenant, s, {"to": "x"}) for s in subjects.values()}
    for s in subjects.values():
        sealed = sealed_for[s]
        for topic, name, rec in (
            (STATUS_EVENTS, "StatusEvent", {"event_id": f"e-{s}", "tenant_id": tenant, "waba_id": "w", "phone_number_id": "p",
                                            "wamid": f"wamid.{s}", "status": "delivered", "timestamp": now,
                                            "subject_id": s, "received_at": now}),
            (SEND_REQUESTED, "SendCommand", {"command_id": f"c-{s}", "tenant_id": tenant, "idempotency_key": f"k-{s}",
                                             "phone_number_id": "p", "subject_id": s, "lane": "TRANSACTIONAL",
                                             "campaign_id": None, "kind": "TEXT", "template": None, "pii": sealed,
                                             "requested_at": now}),
            (INBOUND_MESSAGES, "InboundMessage", {"event_id": f"i-{s}", "tenant_id": tenant, "waba_id": "w",
                                                  "phone_number_id": "p", "message_id": f"m-{s}", "type": "text",
                                                  "timestamp": now, "subject_id": s, "pii": sealed, "received_at": now}),
        ):
            p.produce(topic, key=tenant.encode(), value=serde.encode(name, rec, topic=topic))
    assert p.flush(30) == 0

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": topics, "WAPIPE_STATE_DIR": str(state),
           "WAPIPE_JARS_DIR": str(settings.jars_dir), "WAPIPE_SINK_GROUP": f"sink-{unique}",
           "WAPIPE_SINK_DLQ_MAX_RATIO": "1.0", "WAPIPE_SINK_BATCH_MS": "300", "WAPIPE_PRIVACY_CHECK_INTERVAL_S": "0.3",
           **{f"WAPIPE_{k.upper()}": str(v) for k, v in FAST.items()}}
    env.pop("CLICKHOUSE_URL", None)
    log = open(tmp_path / "services.log", "wb")
    procs = []
    try:
        procs.append(start(["sink"], env, log))
        reader = open_reader(settings)

        def rows(s):
            return reader.query("SELECT (SELECT count() FROM status_events WHERE subject_id = {s:String}),"
                                " (SELECT count() FROM send_requests WHERE subject_id = {s:String}),"
                                " (SELECT count() FROM inbound_messages WHERE subject_id = {s:String})", {"s": s})[0]

        deadline = time.monotonic() + 60
        while rows(subjects["A"]) != (1, 1, 1) or rows(subjects["B"]) != (1, 1, 1):
            assert time.monotonic() < deadline, (rows(subjects["A"]), rows(subjects["B"]))
            time.sleep(0.5)
        procs.append(start(["privacy", "run"], env, log))
        r = subprocess.run([sys.executable, "-m", "wapipe", "privacy", "erase", "--tenant", tenant,
                            "--subject", subjects["A"], "--wait", "90"], env=env, capture_output=True, text=True, timeout=150)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["status"] == "COMPLETED", (out, (tmp_path / "services.log").read_text()[-3000:])
        assert rows(subjects["A"]) == (0, 0, 0)
        assert rows(subjects["B"]) == (1, 1, 1)
        reader.close()
    finally:
        codes = [stop(proc) for proc in reversed(procs)]
        apply_topics(admin, make_settings(tmp_path / "restore", kafka_bootstrap_servers=topics), SHORT)
    assert codes == [0] * len(procs), (tmp_path / "services.log").read_text()[-3000:]
