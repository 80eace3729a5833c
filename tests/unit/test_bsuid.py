"""Username users (issue 20 item 2): business-scoped user ids (BSUIDs) from webhook to events.

Fixtures follow the shapes of Meta's "Business-scoped user IDs" page (docs/meta-api.md); values are
made up. Properties: any string is either a BSUID or refused with a reason that never echoes it,
and a malformed BSUID in a webhook costs its own item only (a dead letter naming its path)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.meta.bsuid import check_bsuid, is_bsuid, is_parent_bsuid
from connectors.meta.webhooks import parse_items
from processors.normalise.convert import UNASSIGNED_TENANT, Normaliser
from wapipe.avro import AvroSerde
from wapipe.privacy.links import closure
from wapipe.privacy.subjects import subject_id
from wapipe.privacy.wamids import WamidRefs
from wapipe.topics import INBOUND_MESSAGES, STATUS_EVENTS, SUBJECT_LINKS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "webhooks"
PEPPER = b"p" * 32
NOW = dt.datetime(2026, 11, 25, 10, 0, tzinfo=dt.timezone.utc)
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SERDE = AvroSerde()


class _Tenants:
    def tenant_for_number(self, pnid):
        return type("T", (), {"tenant_id": "acme"})() if pnid == "106540352242922" else None

    def tenant_for_waba(self, waba_id):
        return None


def _normaliser():
    sealed: list = []

    def seal(scope, subject, data):
        sealed.append((scope, subject, data))
        return {"key_id": f"{subject}/k1", "nonce": b"\0" * 12, "ciphertext": b"x"}

    n = Normaliser(_Tenants(), seal, lambda scope, wa: subject_id(PEPPER, scope, wa),
                   wamid_ref=WamidRefs.from_pepper(PEPPER))
    return n, sealed


def _raw(doc) -> dict:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return {"ingress_id": "i", "received_at": NOW, "app_id": "a", "signature_verified": True, "headers": {},
            "body": body}


def _doc(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def _value(doc: dict) -> dict:
    return doc["entry"][0]["changes"][0]["value"]


try:
    check_bsuid("")
except ValueError as _exc:
    _REASON = str(_exc)


def sid(ident: str) -> str:
    return subject_id(PEPPER, "acme", ident)


# --- the format ----------------------------------------------------------------------------------
@pytest.mark.parametrize("good", ["US.13491208655302741918", "US.ENT.11815799212886844830", "PT.a", "BR." + "Z9" * 64])
def test_bsuids_of_meta_s_format_are_accepted_unchanged(good):
    assert is_bsuid(good) and check_bsuid(good) == good


@pytest.mark.parametrize("bad", ["", "US", "US.", "us.123", "USA.123", "US.12-34", " US.123", "US.123 ", "US..1",
                                 "US.ENT.", "US.1.2", "15551234567", "US." + "1" * 129, "US.١٢٣"])
def test_malformed_bsuids_are_refused(bad):
    assert not is_bsuid(bad)
    with pytest.raises(ValueError):
        check_bsuid(bad)


def test_parent_bsuids_are_told_apart():
    assert is_parent_bsuid("US.ENT.11815799212886844830") and not is_parent_bsuid("US.13491208655302741918")


@PROPS
@given(st.text(max_size=160))
def test_any_string_is_a_bsuid_or_refused_without_echo(value):
    try:
        assert check_bsuid(value) == value
    except ValueError as exc:
        assert not is_bsuid(value)
        assert str(exc) == _REASON  # one reason for all: it never echoes the value (dead letters, HTTP)


@PROPS
@given(st.sampled_from(string.ascii_uppercase), st.sampled_from(string.ascii_uppercase),
       st.text(string.ascii_letters + string.digits, min_size=1, max_size=128), st.booleans())
def test_every_well_formed_bsuid_is_a_subject_of_its_own(a, b, rest, parent):
    bsuid = f"{a}{b}.{'ENT.' if parent else ''}{rest}"
    assert is_bsuid(bsuid)
    # never read for its digits: the BSUID and a number with the same digits are two subjects
    digits = "".join(c for c in rest if c.isdigit())
    if digits:
        assert sid(bsuid) != sid(digits)
    assert sid(bsuid) != subject_id(PEPPER, "other", bsuid)  # per tenant


@PROPS
@given(st.text(max_size=40))
def test_subject_id_either_answers_or_raises_value_error(value):
    try:
        assert len(sid(value)) == 32
    except ValueError:
        pass


# --- the webhook models ---------------------------------------------------------------------------
def test_a_username_user_s_message_has_no_number_and_parses():
    items = parse_items(json.dumps(_doc("inbound_text_username")))
    assert not items.bad
    [(_, item)] = items.messages
    assert item.message.from_ is None and item.message.from_user_id == "PT.4410283746592013847"
    assert item.contact.user_id == item.message.from_user_id and item.contact.profile.username == "ines.duarte"


def test_a_message_without_any_sender_is_its_own_bad_item():
    doc = _doc("inbound_text_username")
    v = _value(doc)
    v["messages"].append(copy.deepcopy(v["messages"][0]))
    del v["messages"][1]["from_user_id"]
    items = parse_items(json.dumps(doc))
    assert len(items.messages) == 1
    [bad] = items.bad
    assert bad.path == "entry[0].changes[0].value.messages[1]" and "from_user_id" in bad.reason


# --- the normaliser ---------------------------------------------------------------------------------
def test_inbound_from_a_username_user_is_the_bsuid_s_subject_sealed_and_linked_to_the_parent():
    doc = _doc("inbound_text_username")
    v = _value(doc)
    n, sealed = _normaliser()
    events = n.convert(_raw(doc))
    [msg] = [e for e in events if e.topic == INBOUND_MESSAGES]
    user, parent = v["contacts"][0]["user_id"], v["contacts"][0]["parent_user_id"]
    assert msg.record.subject_id == sid(user) and msg.record.tenant_id == "acme"
    [(scope, subject, data)] = sealed
    assert (scope, subject) == ("acme", sid(user))
    assert data["from"] is None and data["from_user_id"] == user and data["from_parent_user_id"] == parent
    assert data["username"] == "ines.duarte" and data["profile_name"] == "Ines Duarte"
    [link] = [e for e in events if e.topic == SUBJECT_LINKS]
    assert link.key == f"acme/{sid(parent)}"
    assert (link.record.subject_id, link.record.linked_subject_id) == (sid(user), sid(parent))
    for e in events:  # nothing names the person in clear, keys included
        wire = e.key.encode() + SERDE.encode(e.record_name, e.record.to_avro())
        for secret in (user, parent, "ines.duarte", "Ines Duarte"):
            assert secret.encode() not in wire


def test_number_and_bsuid_together_keep_the_number_s_subject_and_link_the_bsuid():
    doc = _doc("inbound_text_phone_and_bsuid")
    n, _ = _normaliser()
    events = n.convert(_raw(doc))
    [msg] = [e for e in events if e.topic == INBOUND_MESSAGES]
    assert msg.record.subject_id == sid("46701234567")  # the subject this person always had
    [link] = [e for e in events if e.topic == SUBJECT_LINKS]
    assert (link.record.subject_id, link.record.linked_subject_id) == (sid("46701234567"),
                                                                             sid("SE.90817263544536271809"))
    # the read status of the same person, by number and BSUID: the same link (same id, same key)
    st_events = n.convert(_raw(_doc("status_read_phone_and_bsuid")))
    [st_link] = [e for e in st_events if e.topic == SUBJECT_LINKS]
    assert (st_link.key, st_link.event_id) == (link.key, link.event_id)
    [status] = [e for e in st_events if e.topic == STATUS_EVENTS]
    assert status.record.subject_id == sid("46701234567")


def test_status_to_a_username_user_is_the_bsuid_s_subject_and_bsuids_stay_out_of_extra():
    doc = _doc("status_delivered_username")
    st_doc = _value(doc)["statuses"][0]
    n, sealed = _normaliser()
    events = n.convert(_raw(doc))
    [ev] = [e for e in events if e.topic == STATUS_EVENTS]
    assert ev.record.subject_id == sid(st_doc["recipient_user_id"])
    assert ev.record.recipient_type == "individual"
    extra = json.loads(ev.record.extra)
    assert "recipient_user_id" not in extra and "recipient_parent_user_id" not in extra
    [(_, _, data)] = sealed
    assert data == {"recipient_id": None, "wamid": st_doc["id"], "recipient_user_id": st_doc["recipient_user_id"],
                    "recipient_parent_user_id": st_doc["recipient_parent_user_id"]}
    assert [e.record.linked_subject_id for e in events if e.topic == SUBJECT_LINKS] == \
        [sid(st_doc["recipient_parent_user_id"])]


def test_a_group_status_is_a_group_event_not_a_person():
    doc = _doc("status_sent_group")
    st_doc = _value(doc)["statuses"][0]
    n, sealed = _normaliser()
    [ev] = n.convert(_raw(doc))  # no link, no dead letter
    assert ev.topic == STATUS_EVENTS and ev.record.recipient_type == "group"
    assert ev.record.subject_id is None and ev.record.pii is None and sealed == []
    assert json.loads(ev.record.extra)["group_id"] == st_doc["recipient_id"]


def test_an_account_change_naming_a_user_by_bsuid_only_is_sealed_per_person():
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"},
             "participants": [{"user_id": "US.13491208655302741918", "profile": {"username": "kerry"}},
                              {"user_id": "GB.55512345678901234567"}]}
    doc = {"object": "whatsapp_business_account",
           "entry": [{"id": "1", "changes": [{"field": "group_participants_update", "value": value}]}]}
    n, sealed = _normaliser()
    events = n.convert(_raw(doc))
    assert sorted(e.record.subject_id for e in events) == sorted([sid("US.13491208655302741918"),
                                                                     sid("GB.55512345678901234567")])
    for e in events:
        assert b"US.1349" not in SERDE.encode(e.record_name, e.record.to_avro()) and b"kerry" not in e.record.value.encode()


bad_bsuids = st.one_of(st.text(max_size=30).filter(lambda s: not is_bsuid(s)), st.integers(), st.lists(st.integers()),
                       st.just("US.12 34"), st.just("US." + "9" * 129))


@PROPS
@given(bad_bsuids, st.sampled_from([("messages", "from_user_id"), ("messages", "from_parent_user_id"),
                                    ("statuses", "recipient_user_id"), ("statuses", "recipient_parent_user_id")]))
def test_a_bad_bsuid_dead_letters_its_item_only(bad, where):
    kind, field = where
    doc = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "metadata": {"phone_number_id": "106540352242922"},
        "messages": [copy.deepcopy(_value(_doc("inbound_text_username"))["messages"][0]) for _ in range(2)],
        "statuses": [copy.deepcopy(_value(_doc("status_delivered_username"))["statuses"][0]) for _ in range(2)]}}]}]}
    v = _value(doc)
    v["messages"][1]["id"] += "x"
    v["statuses"][1]["id"] += "x"
    v[kind][0][field] = bad
    n, _ = _normaliser()
    done = n.convert_items(_raw(doc))
    [item] = done.bad
    assert item.path == f"entry[0].changes[0].value.{kind}[0]" and field in item.reason
    if isinstance(bad, str) and is_bsuid(bad.strip()) is False and bad.startswith("US."):
        assert bad not in item.reason  # BSUID-shaped values are not echoed (the reason is fixed)
    # the other message and both statuses (or both messages and the other status) still convert
    assert len([e for e in done.events if e.topic in (INBOUND_MESSAGES, STATUS_EVENTS)]) == 3
    for e in done.events:
        SERDE.encode(e.record_name, e.record.to_avro())


def test_closure_follows_links_both_ways():
    assert closure([("n", "b"), ("b", "p"), ("x", "y")], "p") == {"n", "b", "p"}
    assert closure([], "n") == {"n"}


# --- the privacy API's person reference ----------------------------------------------------------------
@PROPS
@given(st.one_of(st.text(max_size=160), st.integers(), st.none()))
def test_the_privacy_api_takes_a_bsuid_or_refuses_it_as_bad_input(value):
    from pydantic import ValidationError

    from wapipe.privacy.api import SubjectRef

    try:
        ref = SubjectRef(user_id=value)
    except ValidationError as exc:  # the API's 400 (wapipe.http_input), never a 500
        assert not (isinstance(value, str) and is_bsuid(value))
        assert len(str(exc)) < 2000
        return
    assert ref.person == value and is_bsuid(value)
