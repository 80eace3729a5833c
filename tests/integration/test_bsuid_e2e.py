"""Username users end to end (issue 20 item 2), every part real but Meta (the sandbox):

a username user (a BSUID, no number) writes in -> the sandbox's signed webhook -> `wapipe ingress`
-> `wapipe normalise` -> wa.inbound.messages -> `wapipe sink` -> ClickHouse; the ERP answers by
BSUID through the SDK -> `wapipe worker` -> the sandbox (Graph body ``recipient``), whose status
webhooks (``recipient_user_id``, no number) come back the same way; a command naming a number and
a BSUID goes to the number (Meta's precedence) and links the two subjects; export by BSUID finds
the person's data, erasure by number reaches the linked BSUID's subject."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import httpx
import pytest

from connectors.meta.signature import sign

from producers.erp import template, text
from sinks.reader import open_reader
from tests.integration.test_send_pipeline import send_world  # noqa: F401  (the fixture)
from wapipe.privacy.service import PrivacyService
from wapipe.topics import INBOUND_MESSAGES
from wapipe.app.services import ServiceSpec

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
# One fixture per shape, written from Meta's "Business-scoped user IDs" page (tests/fixtures/webhooks).
SHAPES = ("inbound_text_username", "inbound_text_phone_and_bsuid", "status_delivered_username",
          "status_read_phone_and_bsuid", "status_sent_group")


def _bsuid(prefix: str = "PT.") -> str:
    return prefix + "".join(random.choice("0123456789") for _ in range(20))


def _wait(what, check, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.5)


def test_a_username_user_writes_in_gets_answers_by_bsuid_and_is_exported_and_erased(send_world):
    w = send_world
    sb, ctl = w.sandbox, w.sandbox.control
    apps = {"WAPIPE_META_APPS": json.dumps({sb.app_id: sb.app_secret})}
    w.settings.state_dir.mkdir(parents=True, exist_ok=True)
    env = {**w.env, **apps, "WAPIPE_SINK_GROUP": f"sink-{w.tenant_id}", "WAPIPE_SINK_BATCH_MS": "300",
           "WAPIPE_SINK_DLQ_MAX_RATIO": "1.0", "WAPIPE_NORMALISE_APP_ID": f"normalise-{w.tenant_id}"}
    env.pop("CLICKHOUSE_URL", None)
    w.supervisor.start(ServiceSpec("normalise", ("normalise",), env=env, ready_timeout=90, stop_timeout=20))
    ingress = w.supervisor.start(ServiceSpec("ingress", ("ingress",), args=("--port", "0", "--host", "127.0.0.1"),
                                             env=env, ready_timeout=60, stop_timeout=20))
    w.supervisor.start(ServiceSpec("sink", ("sink",), env=env, ready_timeout=90, stop_timeout=30))
    ctl.set_webhook(ingress.ready_value.rstrip("/") + "/webhook", app_id=sb.app_id, app_secret=sb.app_secret)
    w.start_worker()
    reader = open_reader(w.settings)
    user, parent, other_user = _bsuid(), _bsuid("PT.ENT."), _bsuid("SE.")
    phone = w.recipient(5)

    # 1. The username user writes in: no number anywhere; the event is the BSUID's subject.
    ctl.inbound(w.numbers[0], None, "Olá, a encomenda chegou partida", user_id=user, parent_user_id=parent,
                username="ines.d")
    inbound = _wait("the inbound message in ClickHouse", lambda: reader.query(
        "SELECT subject_id, extra FROM inbound_messages WHERE tenant_id = {t:String}", {"t": w.tenant_id}))
    assert inbound == [(w.subject(user), "{}")]

    # 2. The ERP answers by BSUID: a session text (the window is the BSUID subject's) and a template;
    #    and a template to a number and another BSUID: Meta sends to the number.
    w.followed_to_end(INBOUND_MESSAGES)  # the worker's window view has read it
    w.send(text(None, "Lamentamos! Enviamos outra.", recipient=user), w.routing("u-text"))
    w.send(template(None, "hello_world", recipient=user), w.routing("u-tpl"))
    w.send(template(phone, "hello_world", recipient=other_user), w.routing("u-both"))
    final = w.final(["u-text", "u-tpl", "u-both"], timeout=90)
    assert {k: r["outcome"] for k, r in final.items()} == dict.fromkeys(("u-text", "u-tpl", "u-both"), "ACCEPTED"), final
    assert final["u-text"]["subject_id"] == final["u-tpl"]["subject_id"] == w.subject(user)
    assert final["u-both"]["subject_id"] == w.subject(phone)
    msgs = {m["biz_opaque_callback_data"].split("/", 1)[1]: m for m in ctl.messages(w.numbers[0])
            if (m.get("biz_opaque_callback_data") or "").startswith(w.tenant_id + "/")}
    assert (msgs["u-text"]["wa_id"], msgs["u-text"]["user_id"], msgs["u-text"]["type"]) == (None, user, "text")
    assert (msgs["u-tpl"]["wa_id"], msgs["u-tpl"]["user_id"]) == (None, user)
    assert (msgs["u-both"]["wa_id"], msgs["u-both"]["user_id"]) == (phone, None)

    # 3. Their statuses come back by recipient_user_id: status events of the BSUID's subject, with
    #    nothing of the BSUID in clear.
    refs = [w.ref(msgs[k]["wamid"]) for k in ("u-text", "u-tpl")]
    rows = _wait("the BSUID sends' statuses in ClickHouse", lambda: (lambda r: r if len(r) == 2 else None)(
        reader.query("SELECT wamid, groupArray(status), any(subject_id), groupArray(extra) FROM status_events"
                     " WHERE wamid IN {r:Array(String)} AND status = 'sent' GROUP BY wamid", {"r": refs})))
    for _, statuses, subject, extras in rows:
        assert statuses == ["sent"] and subject == w.subject(user)
        assert all(user not in e and parent not in e for e in extras)

    # 4. Every fixture shape, signed and posted to the ingress as Meta would: one event each in
    #    ClickHouse, the person's subject from the number when there is one, else from the BSUID;
    #    the group's status a group event (no subject, recipient_type 'group'); no dead letter.
    url = ingress.ready_value.rstrip("/") + "/webhook"
    for name in SHAPES:
        doc = json.loads((FIXTURES / f"{name}.json").read_text())
        doc["entry"][0]["id"] = sb.waba_id
        doc["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = w.numbers[0]
        body = json.dumps(doc).encode()
        r = httpx.post(url, content=body, headers={"X-Hub-Signature-256": sign(sb.app_secret.encode(), body),
                                                   "Content-Type": "application/json"}, timeout=30)
        assert r.status_code == 200, (name, r.status_code, r.text)
    fx_in = _wait("the fixtures' inbound messages", lambda: (lambda r: r if len(r) == 3 else None)(reader.query(
        "SELECT subject_id FROM inbound_messages WHERE tenant_id = {t:String} ORDER BY subject_id", {"t": w.tenant_id})))
    assert sorted(x for (x,) in fx_in) == sorted([w.subject(user), w.subject("PT.4410283746592013847"),
                                                   w.subject("46701234567")])
    fixture_refs = {w.ref(json.loads((FIXTURES / f"{n}.json").read_text())["entry"][0]["changes"][0]["value"]
                          ["statuses"][0]["id"]): n for n in SHAPES if n.startswith("status_")}
    fx_st = _wait("the fixtures' statuses", lambda: (lambda r: r if len(r) == 3 else None)(reader.query(
        "SELECT wamid, status, subject_id, recipient_type, extra FROM status_events"
        " WHERE tenant_id = {t:String} AND wamid IN {r:Array(String)}", {"t": w.tenant_id, "r": list(fixture_refs)})))
    got = {fixture_refs[ref]: (status, subject, rtype, json.loads(extra)) for ref, status, subject, rtype, extra in fx_st}
    assert got["status_delivered_username"][:3] == ("delivered", w.subject("PT.4410283746592013847"), "individual")
    assert got["status_read_phone_and_bsuid"][:3] == ("read", w.subject("46701234567"), "individual")
    group = got["status_sent_group"]
    assert group[:3] == ("sent", "", "group") and group[3]["group_id"] == "Y2FwaS1ncm91cDo0NDExOTI4Mzc0NjU="
    for _, _, _, extra in got.values():
        assert not any(k.startswith("recipient_") and k != "recipient_type" for k in extra), extra

    # 5. Privacy by BSUID: the links (inbound: BSUID <-> parent; the SDK: number <-> other BSUID),
    #    an export named by BSUID, an erasure named by number reaching the linked BSUID's subject.
    svc = PrivacyService(w.settings, w.bootstrap).start()
    try:
        assert svc.linked(w.tenant_id, w.subject(user)) == {w.subject(user), w.subject(parent)}
        assert svc.linked(w.tenant_id, w.subject(parent)) == {w.subject(user), w.subject(parent)}
        assert svc.linked(w.tenant_id, w.subject(phone)) == {w.subject(phone), w.subject(other_user)}
        doc = svc.export(tenant_id=w.tenant_id, owns_number=lambda p: p in w.numbers, wa_id=user,
                         reader_factory=lambda: open_reader(w.settings))
        assert doc["subject_id"] == w.subject(user) and doc["linked_subjects"] == [w.subject(parent)]
        opened = [r["record"]["pii"] for r in doc["kafka"]["wa.inbound.messages"]]
        assert [(p["from"], p["from_user_id"], p["from_parent_user_id"], p["username"]) for p in opened] == \
            [(None, user, parent, "ines.d")]
        assert len(doc["clickhouse"]["inbound_messages"]) == 1 and len(doc["clickhouse"]["status_events"]) >= 2
        raw = [i for r in doc["kafka"].get("wa.webhook.raw", []) for i in r["items"]]
        assert {i["kind"] for i in raw} >= {"messages", "statuses", "contacts"}
        rec = svc.submit("ERASURE", tenant_id=w.tenant_id, wa_id=phone)
        assert rec.subject_id == w.subject(phone)
        [linked_id] = rec.details["linked_requests"].split(",")
        linked = svc.registry.get(linked_id)
        assert (linked.kind, linked.subject_id, linked.details["linked_to"]) == \
            ("ERASURE", w.subject(other_user), w.subject(phone))
        assert svc.linked(w.tenant_id, w.subject(phone)) == {w.subject(phone)}  # links tombstoned
        assert svc.linked(w.tenant_id, w.subject(user)) == {w.subject(user), w.subject(parent)}  # others kept
    finally:
        svc.close()
        reader.close()
