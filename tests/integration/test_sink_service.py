"""`wapipe sink` as a subprocess: records of every sink topic produced to the real broker become
queryable through `open_reader()` (the sink's read-only endpoint, since it owns the chDB folder)."""

from __future__ import annotations

import datetime as dt
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from sinks.reader import HttpReader, ReaderError, endpoint_file, open_reader
from wapipe.avro import AvroSerde
from wapipe.edge.clients import producer
from tests.harness import eventually, make_settings
from wapipe.topics import (
    ACCOUNT_EVENTS,
    AUDIT,
    INBOUND_MESSAGES,
    SEND_REQUESTED,
    SEND_REQUESTED_BULK,
    SEND_RESULTS,
    STATUS_EVENTS,
)

pytestmark = pytest.mark.integration


def _ready_line(proc, timeout=90.0) -> str:
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line.startswith("READY"):
            return line.strip()
    return ""


def test_wapipe_sink_end_to_end(topics, tmp_path, unique):
    bootstrap = topics
    serde = AvroSerde()
    now = dt.datetime.now(dt.timezone.utc)
    tenant = f"t-{unique}"
    sealed = {"key_id": f"s-{unique}/k1", "nonce": b"n" * 12, "ciphertext": b"\x01\x02"}
    recs = [
        (STATUS_EVENTS, "StatusEvent", {"event_id": f"e1-{unique}", "tenant_id": tenant, "waba_id": "w", "phone_number_id": "p",
                                        "wamid": f"wamid.{unique}", "status": "delivered", "timestamp": now,
                                        "subject_id": f"s-{unique}", "received_at": now}),
        (STATUS_EVENTS, "StatusEvent", {"event_id": f"e2-{unique}", "tenant_id": tenant, "waba_id": "w", "phone_number_id": "p",
                                        "wamid": f"wamid.{unique}", "status": "sent", "timestamp": now - dt.timedelta(seconds=5),
                                        "subject_id": f"s-{unique}", "received_at": now}),
        (SEND_REQUESTED, "SendCommand", {"command_id": f"c-{unique}", "tenant_id": tenant, "idempotency_key": f"k-{unique}",
                                         "phone_number_id": "p", "subject_id": f"s-{unique}", "lane": "CAMPAIGN",
                                         "campaign_id": "camp", "kind": "TEMPLATE",
                                         "template": {"name": "hello", "language": "en", "parameter_count": 0},
                                         "pii": sealed, "requested_at": now}),
        # a campaign command: the ERP SDK writes those to the bulk topic
        (SEND_REQUESTED_BULK, "SendCommand", {"command_id": f"cb-{unique}", "tenant_id": tenant,
                                              "idempotency_key": f"kb-{unique}", "phone_number_id": "p",
                                              "subject_id": f"s-{unique}", "lane": "CAMPAIGN", "campaign_id": "camp",
                                              "kind": "TEMPLATE",
                                              "template": {"name": "hello", "language": "en", "parameter_count": 0},
                                              "pii": sealed, "requested_at": now}),
        (SEND_RESULTS, "SendResult", {"command_id": f"c-{unique}", "tenant_id": tenant, "idempotency_key": f"k-{unique}",
                                      "phone_number_id": "p", "subject_id": f"s-{unique}", "lane": "CAMPAIGN",
                                      "outcome": "ACCEPTED", "wamid": f"wamid.{unique}", "attempts": 1, "decided_at": now}),
        (INBOUND_MESSAGES, "InboundMessage", {"event_id": f"i-{unique}", "tenant_id": tenant, "waba_id": "w",
                                              "phone_number_id": "p", "message_id": f"m-{unique}", "type": "text",
                                              "timestamp": now, "subject_id": f"s-{unique}", "pii": sealed,
                                              "received_at": now}),
        (ACCOUNT_EVENTS, "AccountEvent", {"event_id": f"a-{unique}", "tenant_id": tenant, "waba_id": f"w-{unique}",
                                          "field": "message_template_status_update", "event": "APPROVED",
                                          "value": "{}", "timestamp": now, "received_at": now}),
        (AUDIT, "AuditEvent", {"event_id": f"au-{unique}", "occurred_at": now, "actor": "system:test", "tenant_id": tenant,
                               "action": "test.sink", "details": {"k": "v"}}),
    ]
    p = producer(bootstrap)
    for topic, name, rec in recs:
        p.produce(topic, key=tenant.encode(), value=serde.encode(name, rec, topic=topic))
    assert p.flush(30) == 0

    state = tmp_path / "state"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(state),
           "WAPIPE_SINK_GROUP": f"sink-{unique}", "WAPIPE_SINK_DLQ_MAX_RATIO": "1.0", "WAPIPE_SINK_BATCH_MS": "300"}
    log = open(tmp_path / "sink.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "wapipe", "sink"], env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        line = _ready_line(proc)
        assert line.startswith("READY sink http://127.0.0.1:"), (line, (tmp_path / "sink.log").read_text()[-2000:])
        settings = make_settings(state, kafka_bootstrap_servers=bootstrap)
        reader = open_reader(settings)
        assert isinstance(reader, HttpReader) and reader.url == line.split()[-1]

        def counts():
            return reader.query(
                "SELECT (SELECT count() FROM status_events WHERE tenant_id = {t:String}),"
                " (SELECT count() FROM send_requests WHERE tenant_id = {t:String}),"
                " (SELECT count() FROM send_results WHERE tenant_id = {t:String}),"
                " (SELECT count() FROM inbound_messages WHERE tenant_id = {t:String}),"
                " (SELECT count() FROM account_events WHERE tenant_id = {t:String}),"
                " (SELECT count() FROM audit_log WHERE tenant_id = {t:String})", {"t": tenant})[0]

        deadline = time.monotonic() + 60
        while counts() != (2, 2, 1, 1, 1, 1) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert counts() == (2, 2, 1, 1, 1, 1)
        # its /metrics count what it wrote (other tests' records on the shared topics are not ours)
        import json as _json

        import httpx

        probe = _json.loads((state / "probes" / "sink.json").read_text())["url"]
        want = {"status_events": 2, "send_requests": 2, "send_results": 1, "inbound_messages": 1,
                "account_events": 1, "audit_log": 1}

        def scrape() -> dict[str, float]:
            return {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
                    for ln in httpx.get(probe + "/metrics", timeout=10).text.splitlines() if ln and ln[0] != "#"}

        def short(m: dict[str, float]) -> list[str]:
            return [t for t, n in want.items() if m.get(f'wapipe_sink_rows_total{{table="{t}"}}', 0) < n]

        # a batch's rows can be read a moment before the sink counts them (it counts after its commit)
        metrics = eventually(lambda: (m := scrape()) and not short(m) and m, timeout=30, every=0.5)
        assert metrics["wapipe_sink_insert_seconds_count"] >= 1 and metrics["wapipe_sink_insert_seconds_sum"] > 0
        assert metrics["wapipe_sink_last_flush_age_seconds"] < 30
        [(status, sent_at, retention)] = reader.query(
            "SELECT status, sent_at, (SELECT max(retention_days) FROM status_events WHERE tenant_id = {t:String})"
            " FROM message_status_current WHERE tenant_id = {t:String}", {"t": tenant})
        assert status == "delivered" and isinstance(sent_at, dt.datetime)
        assert retention == settings.retention_defaults["metadata"]
        [(key_id, cipher, content_days)] = reader.query(
            "SELECT pii_key_id, pii_ciphertext, content_retention_days FROM inbound_messages WHERE tenant_id = {t:String}",
            {"t": tenant})
        assert key_id == sealed["key_id"] and content_days == settings.retention_defaults["content"]
        with pytest.raises(ReaderError, match="readonly|READONLY"):
            reader.query("DROP TABLE status_events")
        reader.close()
    finally:
        proc.terminate()
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait(5)
    assert rc == 0, (tmp_path / "sink.log").read_text()[-2000:]
    assert not endpoint_file(make_settings(state)).exists()
