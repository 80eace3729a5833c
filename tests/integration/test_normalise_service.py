"""`wapipe normalise` as a subprocess on the real broker: fixtures in, typed events out, Meta's
duplicates dropped (also across a restart: the seen-table lives in a changelog), unreadable input
dead-lettered with its reason, personal data only sealed."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.kafka_helpers import delete_all_records, read_all
from wapipe.avro import AvroSerde
from wapipe.kafka import producer
from wapipe.topics import ACCOUNT_EVENTS, INBOUND_MESSAGES, STATUS_EVENTS, WEBHOOK_DEAD, WEBHOOK_RAW

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"


def _body(name: str, pnid: str, waba: str) -> bytes:
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    for entry in doc["entry"]:
        entry["id"] = waba
        for ch in entry["changes"]:
            md = ch["value"].get("metadata") if isinstance(ch["value"], dict) else None
            if md:
                md["phone_number_id"] = pnid
    return json.dumps(doc).encode()


def _status_body(pnid: str, waba: str, suffix: str) -> bytes:
    """A delivered status for its own message (a distinct wamid)."""
    doc = json.loads(_body("status_delivered", pnid, waba))
    doc["entry"][0]["changes"][0]["value"]["statuses"][0]["id"] += suffix
    return json.dumps(doc).encode()


def _raw(serde, body: bytes, verified=True) -> bytes:
    return serde.encode("RawWebhook", {"ingress_id": "t", "received_at": dt.datetime.now(dt.timezone.utc), "app_id": "app",
                                       "signature_verified": verified, "headers": {}, "body": body}, topic=WEBHOOK_RAW)


def _produce(bootstrap: str, items: list[tuple[str, bytes]]) -> None:
    p = producer(bootstrap)
    for key, value in items:
        p.produce(WEBHOOK_RAW, key=key.encode(), value=value)
    assert p.flush(30) == 0


def _readline(proc, timeout: float) -> str:
    """The READY line, read by a thread so a silent or chatty child cannot block the test."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            continue
        if line.startswith("READY"):
            return line
    return ""


class _Service:
    def __init__(self, env: dict, log: Path):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "wapipe", "normalise"], env=env, stdout=subprocess.PIPE,
                                     stderr=open(log, "ab"), text=True)
        line = _readline(self.proc, 90)
        if line.strip() != "READY normalise":
            self.stop()
            raise AssertionError(f"no READY line ({line!r}); log:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _decoded(serde, value, name):
    """The record, or None for another test's poison record on the shared topic."""
    from wapipe.avro import SerdeError

    try:
        return serde.decode(value, name)
    except SerdeError:
        return None


def _mine(bootstrap, topic, serde, name, pred, expect, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in (_decoded(serde, m.value(), name) for m in read_all(bootstrap, topic))
                if r is not None and pred(r)]
        if len(recs) >= expect or time.monotonic() > deadline:
            return recs
        time.sleep(1)


def _events_after_marker(bootstrap, serde, pnid: str, waba: str, marker: str) -> list:
    """The status events of ``pnid`` once a marker webhook published after the redeliveries came
    out (the records before it were handled), plus 2 s for anything late."""
    _produce(bootstrap, [(marker, _raw(serde, _body("status_delivered", marker, waba)))])
    _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == marker, 1)
    time.sleep(2)
    return _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == pnid, 3, 1)


def test_normalise_service_end_to_end(topics, tmp_path, unique):
    bootstrap = topics
    serde = AvroSerde()
    pnid, waba = f"9{int(unique, 16) % 10**12}", f"8{int(unique, 16) % 10**12}"
    names = ["status_sent", "status_read", "status_failed", "inbound_text", "template_paused"]
    good = [(pnid, _raw(serde, _body(n, pnid, waba))) for n in names]
    # Meta's duplicates: every webhook twice, the read status three times.
    _produce(bootstrap, good + good + [good[1]] + [(pnid, b"garbage"), (pnid, _raw(serde, _body("status_sent", pnid, waba), verified=False))])

    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "WAPIPE_STATE_DIR": str(tmp_path / "state"),
           "WAPIPE_NORMALISE_APP_ID": f"normalise-{unique}", "WAPIPE_TOPIC_PARTITIONS": "4"}
    svc = _Service(env, tmp_path / "normalise.log")
    try:
        statuses = _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == pnid, 3)
        inbound = _mine(bootstrap, INBOUND_MESSAGES, serde, "InboundMessage", lambda r: r["phone_number_id"] == pnid, 1)
        account = _mine(bootstrap, ACCOUNT_EVENTS, serde, "AccountEvent", lambda r: r["waba_id"] == waba, 1)
        dead = _mine(bootstrap, WEBHOOK_DEAD, serde, "DeadLetter", lambda r: r["key"] == pnid.encode(), 2)
        time.sleep(2)  # anything extra (a duplicate) would have arrived by now
        statuses = _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == pnid, 3, 1)
        assert sorted(r["status"] for r in statuses) == ["failed", "read", "sent"]
        assert len(inbound) == 1 and inbound[0]["pii"]["key_id"]
        assert len(account) == 1 and account[0]["field"] == "message_template_status_update"
        reasons = sorted(r["reason"] for r in dead)
        assert len(dead) == 2 and any("not an Avro record" in r for r in reasons) and any("signature" in r for r in reasons)

        # Personal data is sealed with a real subject key: the recipient comes back with the KeyRing.
        from wapipe.privacy.kek import load_kek
        from wapipe.privacy.keyring import KeyRing
        from tests.harness import make_settings

        s = make_settings(tmp_path / "state", kafka_bootstrap_servers=bootstrap)
        with KeyRing(s, bootstrap, load_kek(s)) as ring:
            sent = next(r for r in statuses if r["status"] == "sent")
            deadline = time.monotonic() + 20
            while not ring.keys_of(sent["subject_id"]) and time.monotonic() < deadline:
                time.sleep(0.2)
            doc = json.loads((FIXTURES / "status_sent.json").read_text())
            st = doc["entry"][0]["changes"][0]["value"]["statuses"][0]
            # the clear wamid only sealed; the record and its key carry the keyed ref (issue 18)
            assert ring.unseal(sent["pii"]) == {"recipient_id": st["recipient_id"], "wamid": st["id"]}
            assert sent["wamid"].startswith("wref.") and sent["wamid"] != st["id"]
    finally:
        svc.stop()

    # A restart keeps the seen-table (changelog): Meta redelivering again yields nothing new.
    _produce(bootstrap, good)
    svc = _Service(env, tmp_path / "normalise2.log")
    try:
        again = _events_after_marker(bootstrap, serde, pnid, waba, marker=pnid + "1")
        assert len(again) == 3, "a duplicate webhook after a restart produced events again"

        # Webhooks arriving in waves while it runs (several batches, each after the previous one
        # was handled): every one is normalised; none is lost between batches.
        wave_pnid = pnid + "2"
        for wave in range(6):
            _produce(bootstrap, [(wave_pnid, _raw(serde, _status_body(wave_pnid, waba, f"w{wave}-{i}"))) for i in range(5)])
            time.sleep(0.3)
        waves = _mine(bootstrap, STATUS_EVENTS, serde, "StatusEvent", lambda r: r["phone_number_id"] == wave_pnid, 30)
        assert len(waves) == 30 and len({r["wamid"] for r in waves}) == 30
    finally:
        svc.stop()

    # The seen table's changelog deletes by retention (ids older than the window leave the topic)...
    from confluent_kafka.admin import ConfigResource

    from processors.normalise.app import seen_changelog
    from wapipe.topics import admin_client

    changelog = seen_changelog(make_settings(tmp_path / "state", kafka_bootstrap_servers=bootstrap,
                                             normalise_app_id=f"normalise-{unique}"))
    admin = admin_client(bootstrap)
    res = ConfigResource(ConfigResource.Type.TOPIC, changelog.name)
    cfg = {k: v.value for k, v in admin.describe_configs([res])[res].result().items()}
    assert cfg["cleanup.policy"] == "compact,delete"
    assert cfg["retention.ms"] == str((7 * 24 * 3600 + 24 * 3600) * 1000)
    # ...and a restart reads the table from its local store, not the whole changelog again: with
    # the changelog's records deleted, Meta's redelivery still yields nothing new.
    delete_all_records(bootstrap, changelog.name)
    _produce(bootstrap, good)
    svc = _Service(env, tmp_path / "normalise3.log")
    try:
        again = _events_after_marker(bootstrap, serde, pnid, waba, marker=pnid + "3")
        assert len(again) == 3, "with its changelog emptied, the restarted normaliser forgot what it had seen"
    finally:
        svc.stop()
