"""The normaliser on every real-payload fixture: one raw webhook → the right typed events,
nothing personal in clear, unknowns kept, unreadable input refused with a reason."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from processors.normalise.convert import UNASSIGNED_TENANT, Normaliser, Unreadable
from processors.normalise.status import Observed, fold
from tests.integration.disk_scan import wamid_payloads
from wapipe.avro import AvroSerde
from wapipe.privacy.subjects import subject_id
from wapipe.privacy.wamids import WamidRefs
from wapipe.topics import ACCOUNT_EVENTS, INBOUND_MESSAGES, STATUS_EVENTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
ALL = sorted(FIXTURES.glob("*.json"))
PEPPER = b"p" * 32
REF = WamidRefs.from_pepper(PEPPER)
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)


@dataclass
class _Tenant:
    tenant_id: str


class _Directory:
    """The tenant lookup the normaliser needs, over a fixed map (the registry is tested by TENANTS)."""

    def __init__(self, numbers: dict[str, str]):
        self.numbers = numbers

    def tenant_for_number(self, pnid):
        t = self.numbers.get(pnid)
        return _Tenant(t) if t else None

    def tenant_for_waba(self, waba_id):
        return None


class _AesSealer:
    """Real AES-256-GCM with one key per subject (the Kafka-backed KeyRing is covered in integration)."""

    def __init__(self):
        self.keys: dict[str, bytes] = {}
        self.sealed: list[tuple[str, str, dict]] = []

    def __call__(self, tenant_id, subject, data):
        self.sealed.append((tenant_id, subject, data))
        key = self.keys.setdefault(subject, AESGCM.generate_key(256))
        nonce = os.urandom(12)
        kid = f"{subject}/k1"
        return {"key_id": kid, "nonce": nonce, "ciphertext": AESGCM(key).encrypt(nonce, json.dumps(data).encode(), kid.encode())}


def _raw(body: bytes, verified: bool = True) -> dict:
    return {"ingress_id": "i1", "received_at": NOW, "app_id": "app", "signature_verified": verified, "headers": {},
            "body": body}


def _normaliser(numbers=None):
    sealer = _AesSealer()
    n = Normaliser(_Directory(numbers or {}), sealer, lambda scope, wa: subject_id(PEPPER, scope, wa), wamid_ref=REF)
    return n, sealer


def _expected(doc: dict) -> tuple[int, int, int]:
    statuses = messages = others = 0
    for entry in doc["entry"]:
        for ch in entry.get("changes", []):
            if ch["field"] == "messages":
                v = ch["value"]
                statuses += len(v.get("statuses", []))
                messages += len(v.get("messages", []))
                others += len(v.get("errors", []))
            else:
                others += 1
    return statuses, messages, others


def _personal_strings(doc: dict) -> set[str]:
    found: set[str] = set()
    for entry in doc["entry"]:
        for ch in entry.get("changes", []):
            v = ch["value"]
            if ch["field"] != "messages":
                continue
            for s in v.get("statuses", []):
                found.add(s["id"])  # a wamid embeds the number
                for k in ("recipient_user_id", "recipient_parent_user_id"):
                    found.add(s.get(k) or "")
                if s.get("recipient_id") and s.get("recipient_type") != "group":
                    found.add(s["recipient_id"])
            for c in v.get("contacts", []):
                for k in ("wa_id", "user_id", "parent_user_id"):
                    found.add(c.get(k) or "")
                for k in ("name", "username"):
                    found.add((c.get("profile") or {}).get(k) or "")
            for m in v.get("messages", []):
                for k in ("from", "from_user_id", "from_parent_user_id"):
                    found.add(m.get(k) or "")
                found.add(m["id"])
                if (m.get("context") or {}).get("id"):
                    found.add(m["context"]["id"])
                if m.get("type") == "text":
                    found.add(m["text"]["body"])
                for media in ("image", "video", "document"):
                    if (m.get(media) or {}).get("caption"):
                        found.add(m[media]["caption"])
    return {s for s in found if len(s) >= 5}


def test_fixtures_exist():
    assert len(ALL) >= 30, "the connector's webhook fixtures are expected in tests/fixtures/webhooks"


@pytest.mark.parametrize("path", ALL, ids=[p.stem for p in ALL])
def test_every_fixture_normalises_to_the_right_events(path):
    body = path.read_bytes()
    doc = json.loads(body)
    n, sealer = _normaliser()
    events = n.convert(_raw(body))
    statuses, messages, others = _expected(doc)
    by_topic = {t: [e for e in events if e.topic == t] for t in (STATUS_EVENTS, INBOUND_MESSAGES, ACCOUNT_EVENTS)}
    assert (len(by_topic[STATUS_EVENTS]), len(by_topic[INBOUND_MESSAGES]), len(by_topic[ACCOUNT_EVENTS])) == \
        (statuses, messages, others)
    assert len({e.event_id for e in events}) == len(events), "event ids are unique within one webhook"

    serde = AvroSerde()
    wire = b"".join(e.key.encode() + serde.encode(e.record_name, e.record.to_avro()) for e in events)
    for secret in _personal_strings(doc):
        assert secret.encode() not in wire, f"personal data {secret!r} in clear on the wire (keys included)"
    assert not wamid_payloads(wire), "a wamid (it embeds the number) in clear on the wire"
    # Same webhook again: the same event ids (that is what dedup keys on).
    again, _ = _normaliser()
    assert [e.event_id for e in again.convert(_raw(body))] == [e.event_id for e in events]
    # Round trip through Avro keeps every field.
    for e in events:
        back = serde.decode(serde.encode(e.record_name, e.record.to_avro()), e.record_name)
        assert back["event_id"] == e.event_id


def test_status_fields_and_keys():
    body = (FIXTURES / "status_failed.json").read_bytes()
    doc = json.loads(body)
    st = doc["entry"][0]["changes"][0]["value"]["statuses"][0]
    pnid = doc["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"]
    n, sealer = _normaliser({pnid: "acme"})
    [ev] = n.convert(_raw(body))
    r = ev.record.to_avro()
    assert ev.topic == STATUS_EVENTS and ev.key == REF(st["id"]) == r["wamid"] and r["wamid"].startswith("wref.")
    assert r["tenant_id"] == "acme" and r["status"] == "failed"
    assert r["subject_id"] == subject_id(PEPPER, "acme", st["recipient_id"])
    assert [e["code"] for e in r["errors"]] == [e["code"] for e in st["errors"]]
    assert r["errors"][0]["title"] == st["errors"][0]["title"]
    assert r["timestamp"] == dt.datetime.fromtimestamp(int(st["timestamp"]), dt.timezone.utc)
    assert sealer.sealed == [("acme", r["subject_id"], {"recipient_id": st["recipient_id"], "wamid": st["id"]})]


def test_inbound_text_is_sealed_with_sender_profile_and_content():
    body = (FIXTURES / "inbound_text.json").read_bytes()
    v = json.loads(body)["entry"][0]["changes"][0]["value"]
    n, sealer = _normaliser()
    [ev] = n.convert(_raw(body))
    msg = v["messages"][0]
    assert ev.topic == INBOUND_MESSAGES and ev.key == v["metadata"]["phone_number_id"]
    assert ev.record.tenant_id is None  # no tenant claims the number: kept, pseudonymised anyway
    [(scope, subj, data)] = sealer.sealed
    assert scope == UNASSIGNED_TENANT and subj == ev.record.subject_id
    assert data["from"] == msg["from"] and data["message"]["text"]["body"] == msg["text"]["body"]
    assert data["profile_name"] == v["contacts"][0]["profile"]["name"]


def test_unknown_fields_and_types_are_kept():
    n, _ = _normaliser()
    extra = n.convert(_raw((FIXTURES / "unknown_extra_keys.json").read_bytes()))
    assert any(json.loads(e.record.extra) for e in extra if e.topic == STATUS_EVENTS)
    [other] = n.convert(_raw((FIXTURES / "unknown_field.json").read_bytes()))
    doc = json.loads((FIXTURES / "unknown_field.json").read_bytes())
    ch = doc["entry"][0]["changes"][0]
    assert other.topic == ACCOUNT_EVENTS and other.record.field == ch["field"]
    assert json.loads(other.record.value) == ch["value"]
    unk = n.convert(_raw((FIXTURES / "unknown_message_type.json").read_bytes()))
    mtype = json.loads((FIXTURES / "unknown_message_type.json").read_bytes())["entry"][0]["changes"][0]["value"]["messages"][0]["type"]
    assert [e.record.type for e in unk if e.topic == INBOUND_MESSAGES] == [mtype]


def test_template_status_update_becomes_an_account_event():
    body = (FIXTURES / "template_paused.json").read_bytes()
    ch = json.loads(body)["entry"][0]["changes"][0]
    n, _ = _normaliser()
    [ev] = n.convert(_raw(body))
    assert ev.record.field == "message_template_status_update"
    assert ev.record.event == ch["value"]["event"]
    assert json.loads(ev.record.value)["message_template_name"] == ch["value"]["message_template_name"]


@pytest.mark.parametrize("body,reason", [
    (b"{not json", "not valid JSON"),
    (b'{"entry": []}', "not a webhook envelope"),
    (b'{"object": "page", "entry": []}', "not whatsapp_business_account"),
])
def test_unreadable_input_has_a_reason(body, reason):
    n, _ = _normaliser()
    with pytest.raises(Unreadable, match=reason):
        n.convert(_raw(body))


def test_unverified_webhook_is_refused():
    n, _ = _normaliser()
    with pytest.raises(Unreadable, match="signature not verified"):
        n.convert(_raw((FIXTURES / "status_sent.json").read_bytes(), verified=False))


def _t(s):
    return NOW + dt.timedelta(seconds=s)


def test_state_machine_out_of_order_duplicates_and_late_sent():
    evs = [Observed("read", _t(30)), Observed("sent", _t(10)), Observed("read", _t(30)), Observed("sent", _t(10))]
    st = fold(evs)
    assert st.status == "read" and st.rank == 3
    assert st.sent_at == _t(10) and st.read_at == _t(30)
    assert st.delivered == _t(30), "read without delivered implies delivered"
    # every order gives the same state
    import itertools
    for perm in itertools.permutations(evs):
        assert fold(perm).status == "read"


def test_state_machine_failed_keeps_errors_and_unknown_status_never_moves():
    st = fold([Observed("sent", _t(1)), Observed("failed", _t(5), (131026,)), Observed("deleted", _t(9))])
    assert st.status == "failed" and st.error_codes == {131026} and st.delivered is None
    assert fold([Observed("played", _t(3)), Observed("delivered", _t(2))]).status == "played"
    assert fold([Observed("warning", _t(3))]).status == "warning"


def test_restricted_subject_inbound_content_is_not_stored():
    body = (FIXTURES / "inbound_text.json").read_bytes()
    sealer = _AesSealer()
    n = Normaliser(_Directory({}), sealer, lambda scope, wa: subject_id(PEPPER, scope, wa),
                   restricted=lambda scope, subject: True, wamid_ref=REF)
    [ev] = n.convert(_raw(body))
    assert ev.record.pii is None and sealer.sealed == []
    assert "restricted" in json.loads(ev.record.extra)["content"]
    assert ev.record.subject_id and ev.record.message_id


@settings(max_examples=200, deadline=None)
@given(number=st.from_regex(r"[1-9][0-9]{9,13}", fullmatch=True),
       status=st.sampled_from(["sent", "delivered", "read", "failed", "played", "deleted"]),
       reply=st.booleans())
def test_no_wamid_leaves_the_normaliser_in_clear_and_refs_join_the_send(number, status, reply):
    """Issue 18: a wamid embeds the number. Whatever the status or message, no record key or value
    the normaliser publishes holds a wamid (decoded) or the number; the status's ref is the one
    the send worker computes from the Graph answer (the same WamidRefs), so joins still work."""
    from connectors.meta.sandbox.engine import new_wamid

    sent, inbound = new_wamid(number), new_wamid(number)
    value = {"messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550001111", "phone_number_id": "1001"},
             "statuses": [{"id": sent, "status": status, "timestamp": "1750857384", "recipient_id": number}],
             "contacts": [{"profile": {"name": "P"}, "wa_id": number}],
             "messages": [{"from": number, "id": inbound, "timestamp": "1750857384", "type": "text",
                           "text": {"body": "hi"}, **({"context": {"from": "15550001111", "id": sent}} if reply else {})}]}
    body = json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "w1", "changes": [{"field": "messages", "value": value}]}]}).encode()
    n, sealer = _normaliser({"1001": "acme"})
    events = n.convert(_raw(body))
    serde = AvroSerde()
    wire = b"".join(e.key.encode() + b"\0" + serde.encode(e.record_name, e.record.to_avro()) for e in events)
    assert number.encode() not in wire and not any(number.encode() in d for d in wamid_payloads(wire))
    status_ev = next(e for e in events if e.topic == STATUS_EVENTS)
    assert status_ev.key == status_ev.record.wamid == REF(sent)
    inbound_ev = next(e for e in events if e.topic == INBOUND_MESSAGES)
    assert inbound_ev.record.message_id == REF(inbound)
    assert inbound_ev.record.context_message_id == (REF(sent) if reply else None)
    # the clear wamid is kept only sealed with the person's key
    assert {"recipient_id": number, "wamid": sent} in [d for _, _, d in sealer.sealed]


def test_a_normaliser_without_wamid_refs_refuses_rather_than_publish_a_wamid():
    body = (FIXTURES / "status_sent.json").read_bytes()
    n = Normaliser(_Directory({}), _AesSealer(), lambda scope, wa: subject_id(PEPPER, scope, wa))
    with pytest.raises(Unreadable, match="wamid_ref"):  # the status is refused (a dead letter), never published
        n.convert(_raw(body))


def _change(field: str, value: dict) -> bytes:
    return json.dumps({"object": "whatsapp_business_account",
                       "entry": [{"id": "w1", "time": 1750857384, "changes": [{"field": field, "value": value}]}]}).encode()


_META = {"display_phone_number": "15550001111", "phone_number_id": "1001"}


@settings(max_examples=200, deadline=None)
@given(a=st.from_regex(r"[1-9][0-9]{9,13}", fullmatch=True), b=st.from_regex(r"[1-9][0-9]{9,13}", fullmatch=True),
       kind=st.sampled_from(["user_preferences", "smb_message_echoes", "history", "unknown_personal"]))
def test_account_events_about_users_are_per_person_sealed_and_redacted(a, b, kind):
    """Issue 18: fields other than ``messages`` (user preferences, message echoes, ...) carried
    ``wa_id`` in clear on wa.account.events and in account_events, with no subject id, so erasure
    skipped them. Now each person gets an event with their subject id and their part sealed; no
    number, name or wamid of anyone is in clear; a person's sealed part holds nothing of the other."""
    from connectors.meta.sandbox.engine import new_wamid

    assume(a not in b and b not in a)  # one number inside the other: "not in" checks would be meaningless
    value: dict = {"messaging_product": "whatsapp", "metadata": _META}
    if kind == "user_preferences":
        value["contacts"] = [{"profile": {"name": "Ann Person"}, "wa_id": a}, {"profile": {"name": "Bob Person"}, "wa_id": b}]
        value["user_preferences"] = [{"wa_id": w, "detail": "User requested to stop marketing messages",
                                      "category": "marketing_messages", "value": "stop", "timestamp": 1750857384}
                                     for w in (a, b)]
    elif kind == "smb_message_echoes":
        value["message_echoes"] = [{"from": _META["display_phone_number"], "to": w, "id": new_wamid(w),
                                    "timestamp": "1750857384", "type": "text", "text": {"body": f"note for {w[-4:]}x"}}
                                   for w in (a, b)]
    elif kind == "history":
        value["history"] = [{"metadata": {"phase": 0}, "threads": [
            {"id": w, "messages": [{"from": w, "id": new_wamid(w), "timestamp": "1750857384", "type": "text",
                                    "text": {"body": "old chat"}}]} for w in (a, b)]}]
        for t in value["history"][0]["threads"]:  # a thread names its person by wa_id too
            t["wa_id"] = t["id"]
    else:  # a field Meta adds later that names people
        value["new_things"] = [{"recipient_id": w, "note": "x"} for w in (a, b)]
    n, sealer = _normaliser({"1001": "acme"})
    events = n.convert(_raw(_change(kind, value)))
    serde = AvroSerde()
    wire = b"".join(e.key.encode() + b"\0" + serde.encode(e.record_name, e.record.to_avro()) for e in events)
    for secret in (a, b, "Ann Person", "Bob Person"):
        assert secret.encode() not in wire, (kind, secret)
    assert not wamid_payloads(wire)
    events = [e for e in events if e.topic == ACCOUNT_EVENTS]  # (user_preferences: also wa.suppressions)
    subjects = {w: subject_id(PEPPER, "acme", w) for w in (a, b)}
    assert sorted(e.record.subject_id for e in events) == sorted(subjects.values())
    assert len({e.event_id for e in events}) == 2
    for who, other in ((a, b), (b, a)):
        [data] = [d for t, s_, d in sealer.sealed if s_ == subjects[who]]
        blob = json.dumps(data)
        assert who in blob and other not in blob, (kind, data)
        assert data["field"] == kind


@pytest.mark.parametrize("fixture", ["template_approved", "account_violation", "account_restriction",
                                     "quality_limit_upgrade"])
def test_business_account_events_are_kept_whole(fixture):
    """Changes about the business (templates, its number, its account) stay readable for the
    tenants follower, even where they name the business's own number."""
    body = (FIXTURES / f"{fixture}.json").read_bytes()
    n, sealer = _normaliser()
    [ev] = n.convert(_raw(body))
    doc = json.loads(body)
    kept, sent = json.loads(ev.record.value), doc["entry"][0]["changes"][0]["value"]
    assert set(kept) == set(sent)
    assert ev.record.subject_id is None and ev.record.pii is None and sealer.sealed == []
