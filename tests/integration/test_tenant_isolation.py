"""Tenant isolation (issue 18 item 1), on the real broker and a real ClickHouse engine (chDB).

Two tenants A and B share a customer (the same WhatsApp number), a campaign id and the shape of
their subject ids. Every privacy endpoint and command, and campaign control, is tried by A with
B's identifiers: nothing of B may be revealed or changed, and the answer must be the same as for
an identifier that does not exist. B's own calls are the positive control (the data is there).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from processors.normalise.convert import Normaliser
from sinks.reader import DirectReader
from sinks.rows import CONVERTERS, convert
from wapipe.avro import AvroSerde
from wapipe.topics import CAMPAIGN_CONTROL
from wapipe.edge.clients import producer as make_producer
from wapipe.privacy.api import create_app
from wapipe.privacy.kek import load_kek
from wapipe.privacy.wamids import WamidRefs
from wapipe.privacy.keyring import KeyRing
from wapipe.privacy.processor import PrivacyProcessor
from wapipe.privacy.records import Publisher, new_request
from wapipe.privacy.service import PrivacyService
from wapipe.privacy.subjects import pepper_from, subject_id
from wapipe.tenants.models import PhoneNumber, Tenant, TenantStatus, hash_api_key
from wapipe.tenants.registry import TenantRegistry
from wapipe.tenants.store import publish_tenant
from wapipe.topics import INBOUND_MESSAGES, STATUS_EVENTS, WEBHOOK_RAW

pytestmark = pytest.mark.integration


def _number() -> str:
    return "1555" + str(random.randint(10**6, 10**7 - 1))


def _webhook(waba: str, pnid: str, people: list[tuple[str, str, str]], status_to: str, wamid: str) -> bytes:
    """One signed-webhook body of a business number: a text message from each (number, name, text)
    and a delivered status to ``status_to`` — several people in one body, as Meta sends them."""
    ts = str(int(time.time()))
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": pnid},
        "contacts": [{"profile": {"name": name}, "wa_id": wa} for wa, name, _ in people],
        "messages": [{"from": wa, "id": f"wamid.{uuid.uuid4().hex}", "timestamp": ts, "type": "text",
                      "text": {"body": text}} for wa, _, text in people],
        "statuses": [{"id": wamid, "status": "delivered", "timestamp": ts, "recipient_id": status_to}],
    }
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": waba, "changes": [{"field": "messages", "value": value}]}]}).encode()


@dataclass
class Party:
    tenant_id: str
    key: str
    pnid: str
    secret: str  # the customer's message text to this tenant
    profile: str  # the customer's profile name as this tenant's webhook carried it

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class World:
    a: Party
    b: Party
    customer: str  # the WhatsApp number both tenants' customer has
    other_secret: str  # another person's text in A's webhook body
    sid_a: str  # A's subject for the customer
    sid_b: str  # B's subject for the same customer
    op: dict
    client: TestClient
    svc: PrivacyService
    svc_tenants: TenantRegistry
    settings: object


def _ingest(settings, bootstrap: str, clickhouse, normaliser: Normaliser, pnid: str, body: bytes) -> None:
    """What the ingress, the normaliser and the sink do with one webhook: the raw record on
    wa.webhook.raw, the normalised (sealed) events on their topics, their rows in ClickHouse."""
    serde = AvroSerde.from_settings(settings)
    p = make_producer(bootstrap)
    raw = serde.decode(serde.encode("RawWebhook", {
        "ingress_id": uuid.uuid4().hex, "received_at": dt.datetime.now(dt.timezone.utc), "app_id": "app",
        "signature_verified": True, "headers": {}, "body": body}, topic=WEBHOOK_RAW), "RawWebhook")
    p.produce(WEBHOOK_RAW, key=pnid.encode(), value=serde.encode("RawWebhook", raw, topic=WEBHOOK_RAW))
    for ev in normaliser.convert(raw):
        value = serde.encode(ev.record_name, ev.record.to_avro(), topic=ev.topic)
        p.produce(ev.topic, key=ev.key.encode(), value=value)
        conv = CONVERTERS.get(ev.topic)
        if conv is not None:
            row = convert(conv, serde.decode(value, ev.record_name), lambda tenant, kind: 30)
            clickhouse.insert(conv.table, [row], column_names=list(conv.columns))
    assert p.flush(15) == 0


@pytest.fixture
def world(settings, topics, clickhouse, unique):
    s = settings.model_copy(update={"operator_api_key": SecretStr(f"op-{unique}")})
    customer, other = _number(), _number()
    a = Party(f"a-{unique}", f"key-a-{unique}", "1" + str(random.randint(10**9, 10**10 - 1)),
              f"a-secret-{unique}", f"Alice {unique}")
    b = Party(f"b-{unique}", f"key-b-{unique}", "1" + str(random.randint(10**9, 10**10 - 1)),
              f"b-secret-{unique}", f"Bruno {unique}")
    p = make_producer(topics)
    for party, waba in ((a, f"wa{unique}"), (b, f"wb{unique}")):
        publish_tenant(p, Tenant(tenant_id=party.tenant_id, waba_id=waba, api_key_sha256=hash_api_key(party.key),
                                 numbers=(PhoneNumber(phone_number_id=party.pnid),)))
    registry = TenantRegistry(s, topics).start()
    ring = KeyRing(s, topics, load_kek(s)).start()
    svc = None
    try:
        registry.wait_ready(30)
        pepper = pepper_from(s)
        normaliser = Normaliser(registry, ring.seal, lambda scope, wa: subject_id(pepper, scope, wa),
                                wamid_ref=WamidRefs.from_pepper(pepper))  # as `wapipe normalise` (issue 18)
        other_secret = f"o-secret-{unique}"
        _ingest(s, topics, clickhouse, normaliser, a.pnid, _webhook(
            f"wa{unique}", a.pnid, [(customer, a.profile, a.secret), (other, f"Olga {unique}", other_secret)],
            customer, f"wamid.a{unique}"))
        _ingest(s, topics, clickhouse, normaliser, b.pnid, _webhook(
            f"wb{unique}", b.pnid, [(customer, b.profile, b.secret)], customer, f"wamid.b{unique}"))
        svc = PrivacyService(s, topics).start()
        app = create_app(s, svc, registry, reader_factory=lambda: DirectReader(clickhouse, owned=False))
        with TestClient(app) as client:
            yield World(a=a, b=b, customer=customer, other_secret=other_secret,
                        sid_a=subject_id(pepper, a.tenant_id, customer), sid_b=subject_id(pepper, b.tenant_id, customer),
                        op={"X-API-Key": f"op-{unique}"}, client=client, svc=svc, svc_tenants=registry,
                        settings=s)
    finally:
        if svc is not None:
            svc.close()
        ring.close()
        registry.close()


def _leaks(text: str, w: World, party: Party) -> list[str]:
    """Which of ``party``'s (or the other person's) data appear in ``text``."""
    return [x for x in (party.secret, party.profile, w.other_secret) if x in text]


def test_export_holds_only_the_tenants_own_items_of_its_subject(world):
    w = world
    assert w.sid_a != w.sid_b  # a shared customer is two subjects: one per tenant

    # Positive control: each tenant's export of the customer holds its own data, opened.
    mine = w.client.get(f"/privacy/{w.a.tenant_id}/export", params={"wa_id": w.customer}, headers=w.a.auth)
    assert mine.status_code == 200, mine.text
    doc = mine.json()
    assert doc["subject_id"] == w.sid_a and doc["tenant_id"] == w.a.tenant_id
    assert w.a.secret in mine.text and w.a.profile in mine.text
    assert _leaks(mine.text, w, w.b) == []  # B's text and B's profile name of the same person: never
    raw = doc["kafka"][WEBHOOK_RAW]
    assert len(raw) == 1, raw  # A's webhook; B's webhook of the same number is not A's
    kinds = sorted(i["kind"] for i in raw[0]["items"])
    assert kinds == ["contacts", "messages", "statuses"], raw  # the customer's own items only...
    assert all(i["phone_number_id"] == w.a.pnid for i in raw[0]["items"])
    assert set(raw[0]) == {"partition", "offset", "received_at", "items"}  # ...never the whole body
    assert {r["record"]["tenant_id"] for t in (INBOUND_MESSAGES, STATUS_EVENTS) for r in doc["kafka"][t]} == {w.a.tenant_id}
    assert doc["clickhouse"], "ClickHouse rows of A's subject expected"
    assert {row["tenant_id"] for rows in doc["clickhouse"].values() for row in rows} == {w.a.tenant_id}

    theirs = w.client.get(f"/privacy/{w.b.tenant_id}/export", params={"subject_id": w.sid_b}, headers=w.b.auth)
    assert theirs.status_code == 200 and w.b.secret in theirs.text and w.b.profile in theirs.text
    assert _leaks(theirs.text, w, w.a) == []

    # wa_id=1 (a substring of every number) is another person of A: nothing of anyone.
    one = w.client.get(f"/privacy/{w.a.tenant_id}/export", params={"wa_id": "1"}, headers=w.a.auth)
    assert one.status_code == 200
    assert _leaks(one.text, w, w.a) == [] and _leaks(one.text, w, w.b) == [] and w.customer not in one.text
    assert one.json()["clickhouse"] == {} and WEBHOOK_RAW not in one.json()["kafka"]


def test_another_tenants_subject_is_a_404_like_one_that_does_not_exist(world):
    w = world
    A = f"/privacy/{w.a.tenant_id}"
    nobody = uuid.uuid4().hex
    for headers in (w.a.auth, w.op):  # the operator key on A's routes is scoped to A as well
        got = w.client.get(f"{A}/export", params={"subject_id": w.sid_b}, headers=headers)
        none = w.client.get(f"{A}/export", params={"subject_id": nobody}, headers=headers)
        assert (got.status_code, got.json()) == (none.status_code, none.json()) == (404, none.json())
        assert _leaks(got.text, w, w.b) == []
        # a number and another tenant's subject id together: the same 404
        mixed = w.client.get(f"{A}/export", params={"wa_id": w.customer, "subject_id": w.sid_b}, headers=headers)
        assert mixed.status_code == 404
        for kind in ("erasure", "restriction"):
            r = w.client.post(f"{A}/requests", json={"kind": kind, "subject_id": w.sid_b}, headers=headers)
            assert (r.status_code, r.json()) == (404, none.json())
        r = w.client.post(f"{A}/corrections", json={"subject_id": w.sid_b, "field": "profile_name", "value": "X"},
                          headers=headers)
        assert (r.status_code, r.json()) == (404, none.json())

    # B's request code is not A's: the same 404 as an unknown code.
    code = w.client.post(f"/privacy/{w.b.tenant_id}/requests", json={"kind": "restriction", "subject_id": w.sid_b},
                         headers=w.b.auth).json()["confirmation_code"]
    w.client.post(f"/privacy/{w.b.tenant_id}/requests", json={"kind": "unrestriction", "subject_id": w.sid_b},
                  headers=w.b.auth)
    got, none = (w.client.get(f"{A}/requests/{c}", headers=w.a.auth) for c in (code, uuid.uuid4().hex.upper()))
    assert (got.status_code, got.json()) == (none.status_code, none.json()) == (404, none.json())
    assert w.client.get(f"/privacy/{w.b.tenant_id}/requests/{code}", headers=w.b.auth).status_code == 200
    # A's key on B's routes: refused whatever the route (403, as for a tenant that does not exist)
    assert w.client.get(f"/privacy/{w.b.tenant_id}/export", params={"wa_id": w.customer},
                        headers=w.a.auth).status_code == 403
    assert w.client.get(f"/privacy/nobody-{uuid.uuid4().hex[:6]}/export", params={"wa_id": w.customer},
                        headers=w.a.auth).status_code == 403

    # Nothing of B changed: no request of A names B's subject, B's subject is not restricted, no
    # correction of it exists, and B's data still opens.
    reg = w.svc.registry
    assert not [r for r in reg.requests() if r.subject_id == w.sid_b and r.tenant_id != w.b.tenant_id]
    assert not reg.is_restricted(w.b.tenant_id, w.sid_b) and reg.corrections(w.sid_b) == []
    theirs = w.client.get(f"/privacy/{w.b.tenant_id}/export", params={"wa_id": w.customer}, headers=w.b.auth)
    assert w.b.secret in theirs.text and w.b.profile in theirs.text


def _cli(settings, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
           "WAPIPE_STATE_DIR": str(settings.state_dir), "WAPIPE_JARS_DIR": str(settings.jars_dir)}
    env.pop("CLICKHOUSE_URL", None)
    return subprocess.run([sys.executable, "-m", "wapipe", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.slow  # CLI processes
def test_cli_commands_refuse_another_tenants_ids(world):
    w = world
    a, b = w.a.tenant_id, w.b.tenant_id
    r = _cli(w.settings, "privacy", "export", "--tenant", a, "--subject", w.sid_b)
    assert r.returncode == 1 and "no such subject" in r.stderr and w.b.secret not in r.stdout
    r = _cli(w.settings, "privacy", "erase", "--tenant", a, "--subject", w.sid_b)
    assert r.returncode == 1 and "no such subject" in r.stderr
    code = w.svc.submit("RESTRICTION", tenant_id=b, subject=w.sid_b).confirmation_code
    w.svc.submit("UNRESTRICTION", tenant_id=b, subject=w.sid_b)
    r = _cli(w.settings, "privacy", "status", code, "--tenant", a)
    assert r.returncode == 1 and "no request" in r.stderr and code not in r.stdout
    r = _cli(w.settings, "privacy", "status", code, "--meta")  # not a request of Meta's callback either
    assert r.returncode == 1 and "no request" in r.stderr and code not in r.stdout
    r = _cli(w.settings, "privacy", "status", code, "--tenant", b)
    assert r.returncode == 0 and json.loads(r.stdout)["confirmation_code"] == code
    assert not w.svc.registry.is_restricted(b, w.sid_b)


def test_processor_rejects_an_erasure_of_another_tenants_subject(world, topics, unique):
    """A request naming B's subject under A (as the API used to accept) erases nothing."""
    w = world
    forged = new_request("ERASURE", source="api", tenant_id=w.a.tenant_id, subject_id=w.sid_b)
    Publisher(make_producer(topics), AvroSerde.from_settings(w.settings)).request(forged)
    proc = PrivacyProcessor(w.settings, topics, group=f"iso-{unique}", check_interval_s=0.2).start()
    try:
        deadline = time.monotonic() + 30
        while getattr(proc.registry.get(forged.request_id), "status", None) != "REJECTED":
            assert time.monotonic() < deadline, proc.registry.get(forged.request_id)
            proc.tick()
            time.sleep(0.1)
        assert proc.keyring.keys_of(w.sid_b), "B's data keys must still be there"
    finally:
        proc.close()
    theirs = w.client.get(f"/privacy/{w.b.tenant_id}/export", params={"wa_id": w.customer}, headers=w.b.auth)
    assert w.b.secret in theirs.text


def test_tenant_admin_routes_refuse_another_tenant_like_one_that_does_not_exist(world, topics):
    from wapipe.tenants.api import create_app as admin_app

    w = world
    routes = [("GET", ""), ("GET", "/templates"), ("POST", "/templates/sync"), ("POST", "/refresh"),
              ("POST", "/disconnect"), ("PATCH", ""), ("POST", "/api-key"), ("POST", "/resume")]
    nobody = f"nobody-{uuid.uuid4().hex[:6]}"
    b_before = w.svc_tenants.tenant(w.b.tenant_id)
    with TestClient(admin_app(w.settings, topics)) as admin:
        for method, tail in routes:
            got = admin.request(method, f"/admin/tenants/{w.b.tenant_id}{tail}", headers=w.a.auth, json={})
            none = admin.request(method, f"/admin/tenants/{nobody}{tail}", headers=w.a.auth, json={})
            assert (got.status_code, got.json()) == (none.status_code, none.json()), (method, tail)
            assert got.status_code == 403 and w.b.tenant_id not in got.text
        mine = admin.get(f"/admin/tenants/{w.a.tenant_id}", headers=w.a.auth)
        assert mine.status_code == 200 and w.b.tenant_id not in mine.text
    b = TenantRegistry(w.settings, topics).start()
    try:
        b.wait_ready(30)
        tb = b.tenant(w.b.tenant_id)
        # nothing of B changed: not disconnected, its version unchanged, its key still the one that works
        assert tb is not None and tb.status != TenantStatus.DISCONNECTED and tb.api_key_matches(w.b.key)
        assert tb.version == b_before.version
    finally:
        b.close()


# --- campaigns: keyed by (tenant, campaign) ----------------------------------------------------
from tests.integration.test_send_pipeline import send_world  # noqa: E402,F401  (the fixture: real worker + sandbox)


def _campaign_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wapipe", "campaign", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # the real send worker
@pytest.mark.send_world(rates=[(100, 100)])
def test_another_tenants_campaign_stop_does_not_touch_ours(send_world, unique):
    from collections import Counter

    from producers.erp import Lane, template

    w = send_world
    other = f"x{unique}"
    # Another tenant stops its campaign "promo", and a control record without a tenant (the old
    # format, keyed by campaign id alone) says STOPPED for "promo" too.
    r = _campaign_cli(w.env, "stop", "promo", "--tenant", other)
    assert r.returncode == 0, r.stderr
    serde = AvroSerde.from_settings(w.settings)
    p = make_producer(w.bootstrap)
    p.produce(CAMPAIGN_CONTROL, key=b"promo", value=serde.encode("CampaignControl", {
        "campaign_id": "promo", "tenant_id": "", "state": "STOPPED", "actor": "operator:cli",
        "at": dt.datetime.now(dt.timezone.utc)}, topic=CAMPAIGN_CONTROL))
    assert p.flush(10) == 0
    r = _campaign_cli(w.env, "stop", "promo")  # a campaign command without its tenant is refused
    assert r.returncode != 0 and "--tenant" in r.stderr

    w.start_worker()
    n = 40
    keys = [f"p-{i}" for i in range(n)]
    w.publish([(template(w.recipient(i), "hello_world"), w.routing(k, lane=Lane.CAMPAIGN, campaign="promo"))
               for i, k in enumerate(keys)])
    final = w.final(keys, timeout=60)
    assert Counter(r["outcome"] for r in final.values()) == Counter({"ACCEPTED": n})

    mine = json.loads(_campaign_cli(w.env, "progress", "promo", "--tenant", w.tenant_id, "--json").stdout)
    assert (mine["queued"], mine["sent"], mine["remaining"], mine["state"]) == (n, n, 0, "RUNNING")
    theirs = json.loads(_campaign_cli(w.env, "progress", "promo", "--tenant", other, "--json").stdout)
    assert (theirs["queued"], theirs["sent"], theirs["state"]) == (0, 0, "STOPPED")

    # Positive control: our own stop of "promo" cancels what is left of it.
    r = _campaign_cli(w.env, "stop", "promo", "--tenant", w.tenant_id)
    assert r.returncode == 0, r.stderr
    w.followed_to_end(CAMPAIGN_CONTROL)  # the worker's view has the stop
    later = [f"q-{i}" for i in range(10)]
    w.publish([(template(w.recipient(100 + i), "hello_world"), w.routing(k, lane=Lane.CAMPAIGN, campaign="promo"))
               for i, k in enumerate(later)])
    assert {r["outcome"] for r in w.final(later, timeout=60).values()} == {"CANCELLED"}
