"""Marketing opt-out end to end (issue 20, item 4): the sandbox's signed user_preferences webhook →
`wapipe ingress` → `wapipe normalise` → wa.suppressions → the real `wapipe worker`, which refuses a
MARKETING template to the user before any Graph call (the sandbox's counters show no request) while
a UTILITY template still goes; an opt-in lifts it; a 131050 failed status from the sandbox
suppresses the next marketing send too; a malformed user_preferences item is its own dead letter
and a garbage record on wa.suppressions never stops the worker's follower."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from producers.erp import Lane, template
from tests.integration.kafka_helpers import read_all
from tests.integration.test_send_pipeline import _publish_raw, send_world  # noqa: F401  (the fixture)
from wapipe.avro import AvroSerde
from wapipe.app.services import ServiceSpec
from wapipe.topics import SUPPRESSIONS, WEBHOOK_DEAD

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The worker's follower polls every 200 ms: a record on the topic is in its memory well within this.
FOLLOWER_MARGIN_S = 2.0


def _suppression(w, wa_id: str, suppressed: bool, timeout: float = 60.0) -> dict:
    """Wait until wa.suppressions holds the subject's record with ``suppressed``; the record."""
    serde, key = AvroSerde(), f"{w.tenant_id}/{w.subject(wa_id)}".encode()
    deadline = time.monotonic() + timeout
    while True:
        recs = [serde.decode(m.value(), "Suppression") for m in read_all(w.bootstrap, SUPPRESSIONS)
                if m.key() == key and m.value() is not None]
        if recs and recs[-1]["suppressed"] is suppressed:
            time.sleep(FOLLOWER_MARGIN_S)
            return recs[-1]
        assert time.monotonic() < deadline, f"no suppression record {suppressed} for {wa_id}: {recs}"
        time.sleep(0.3)


def _requests(w) -> int:
    """Send requests the sandbox received on the world's first number (accepted or not)."""
    return w.sandbox.control.counters()["numbers"].get(w.numbers[0], {}).get("requests", 0)


def test_opt_out_refuses_marketing_before_meta_utility_goes_opt_in_lifts_it_and_131050_suppresses(send_world):
    w = send_world
    sb, ctl = w.sandbox, w.sandbox.control
    apps = {"WAPIPE_META_APPS": json.dumps({sb.app_id: sb.app_secret})}
    w.settings.state_dir.mkdir(parents=True, exist_ok=True)
    w.supervisor.start(ServiceSpec("normalise", ("normalise",), env={**w.env, **apps}, ready_timeout=90, stop_timeout=20))
    ingress = w.supervisor.start(ServiceSpec("ingress", ("ingress",), args=("--port", "0", "--host", "127.0.0.1"),
                                             env={**w.env, **apps}, ready_timeout=60, stop_timeout=20))
    hook = ingress.ready_value.rstrip("/") + "/webhook"
    ctl.set_webhook(hook, app_id=sb.app_id, app_secret=sb.app_secret)
    ctl.configure(webhooks={"batch_interval_s": 0.05})
    # Poison on the compacted topic before the worker starts: its follower skips it and goes on.
    _publish_raw(w.bootstrap, SUPPRESSIONS, f"{w.tenant_id}/garbage".encode(), b"\xc3\x01not a record")
    w.start_worker()
    pnid, alice, bob, carol, dave = w.numbers[0], w.recipient(1), w.recipient(2), w.recipient(3), w.recipient(4)

    # 1. Alice stops marketing messages: Meta's signed webhook reaches the pipeline.
    ctl.user_preferences(pnid, alice, "stop")
    rec = _suppression(w, alice, True)
    assert rec["source"] == "user_preferences stop" and alice not in json.dumps(rec, default=str)

    before = _requests(w)
    w.send(template(alice, "promo"), w.routing("mkt-1", lane=Lane.CAMPAIGN, campaign="spring"))
    refused = w.final(["mkt-1"])["mkt-1"]
    assert refused["outcome"] == "REJECTED" and refused["reason_code"] == "MARKETING_OPT_OUT", refused
    assert "stopped marketing" in refused["reason"] and refused["error_code"] is None
    assert _requests(w) == before, "the refused marketing send reached the sandbox"

    w.send(template(alice, "hello_world"), w.routing("util-1"))
    ok = w.final(["util-1"])["util-1"]
    assert ok["outcome"] == "ACCEPTED" and ok["reason_code"] is None, ok
    assert _requests(w) == before + 1

    # 2. Alice resumes: marketing goes again.
    ctl.user_preferences(pnid, alice, "resume")
    _suppression(w, alice, False)
    w.send(template(alice, "promo"), w.routing("mkt-2", lane=Lane.CAMPAIGN, campaign="spring"))
    assert w.final(["mkt-2"])["mkt-2"]["outcome"] == "ACCEPTED"
    # The key refused at admission was not remembered: the same key goes now.
    again = w.send(template(alice, "promo"), w.routing("mkt-1", lane=Lane.CAMPAIGN, campaign="spring"))
    deadline = time.monotonic() + 30
    while not (mine := [r for r in w.results() if r["command_id"] == again["command_id"]]):
        assert time.monotonic() < deadline, "no result for the resent key"
    assert [r["outcome"] for r in mine] == ["ACCEPTED"], mine

    # 3. Bob stopped marketing but the app never got the webhook (not subscribed at the time): Meta
    # accepts the send and reports 131050 in a failed status, which suppresses the next one.
    ctl.wait_webhooks_idle()
    ctl.set_webhook(None, app_id=sb.app_id)
    ctl.user_preferences(pnid, bob, "stop")
    ctl.wait_webhooks_idle()
    ctl.set_webhook(hook, app_id=sb.app_id, app_secret=sb.app_secret)
    w.send(template(bob, "promo"), w.routing("mkt-b1", lane=Lane.CAMPAIGN, campaign="spring"))
    assert w.final(["mkt-b1"])["mkt-b1"]["outcome"] == "ACCEPTED"  # Meta's answer; the failure comes later
    assert _suppression(w, bob, True)["source"] == "error 131050"
    before = _requests(w)
    w.send(template(bob, "promo"), w.routing("mkt-b2", lane=Lane.CAMPAIGN, campaign="spring"))
    w.send(template(bob, "hello_world"), w.routing("util-b"))
    got = w.final(["mkt-b2", "util-b"])
    assert got["mkt-b2"]["outcome"] == "REJECTED" and got["mkt-b2"]["reason_code"] == "MARKETING_OPT_OUT", got
    assert got["util-b"]["outcome"] == "ACCEPTED", got
    assert _requests(w) == before + 1

    # 4. A webhook with one malformed item and one good one, signed as Meta signs: the bad item is
    # its own dead letter (its path named), the good one suppresses Dave.
    from connectors.meta.signature import HEADER, sign

    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": pnid},
             "user_preferences": [
                 {"wa_id": carol, "category": "marketing_messages", "value": "maybe", "timestamp": int(time.time())},
                 {"wa_id": dave, "detail": "User requested to stop marketing messages", "category": "marketing_messages",
                  "value": "stop", "timestamp": int(time.time())}]}
    body = json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": sb.waba_id, "changes": [{"field": "user_preferences", "value": value}]}]}).encode()
    r = httpx.post(hook, content=body, headers={HEADER: sign(sb.app_secret.encode(), body),
                                                "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    _suppression(w, dave, True)
    w.send(template(dave, "promo"), w.routing("mkt-d", lane=Lane.CAMPAIGN, campaign="spring"))
    assert w.final(["mkt-d"])["mkt-d"]["outcome"] == "REJECTED"
    serde = AvroSerde()
    dead = [serde.decode(m.value(), "DeadLetter") for m in read_all(w.bootstrap, WEBHOOK_DEAD)]
    mine = [d for d in dead if d["key"] == pnid.encode() and "user_preferences" in (d["headers"].get("path") or "")]
    assert [d["headers"]["path"] for d in mine] == ["entry[0].changes[0].value.user_preferences[0]"], mine
    assert "value" in mine[0]["reason"] and json.loads(mine[0]["value"])["wa_id"] == carol

    sent = w.sent_by_key()
    assert sent[f"{w.tenant_id}/mkt-1"] == 1  # refused while Alice had stopped, sent once after her resume
    for key in ("mkt-b2", "mkt-d"):
        assert sent[f"{w.tenant_id}/{key}"] == 0, key
    for key in ("util-1", "mkt-2", "mkt-b1", "util-b"):
        assert sent[f"{w.tenant_id}/{key}"] == 1, key

    # 5. The person's access request shows their opt-out record (the tenant's, no number in it).
    from wapipe.privacy.service import PrivacyService

    svc = PrivacyService(w.settings, w.bootstrap).start()
    try:
        out = svc.export(tenant_id=w.tenant_id, owns_number=lambda p: p in w.numbers, wa_id=bob)
    finally:
        svc.close()
    mine = [r["record"] for r in out["kafka"].get(SUPPRESSIONS, [])]
    assert [r["source"] for r in mine] == ["error 131050"] and mine[0]["suppressed"] is True, out["kafka"].keys()
